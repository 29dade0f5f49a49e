"""`paygate dlq list` and `paygate dlq replay [ID ...|--all]`: the outbox's dead letters
from the command line (the same functions back the ops API)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gateway.config import Settings
from workers.cli.command import Command, cli_actor
from workers.cli.discovery import locate


def _arguments(dlq: argparse.ArgumentParser) -> None:
    actions = dlq.add_subparsers(dest="dlq_action", required=True)
    ls = actions.add_parser("list", help="show dead-lettered events, oldest first")
    ls.add_argument("--limit", type=int, default=100)
    rp = actions.add_parser("replay", help="publish dead-lettered events again")
    rp.add_argument("ids", nargs="*", type=int, metavar="ID")
    rp.add_argument("--all", dest="all_", action="store_true", help="every dead letter")
    rp.add_argument("--actor", default="", help="who replays (audit log); default cli:$USER")


def _print_table(rows: list[dict[str, Any]], total: int) -> None:
    if not rows:
        print("no dead letters")
        return
    print(f"{'ID':>10}  {'EVENT TYPE':<24} {'KEY':<32} {'TRIES':>5}  {'DEAD SINCE':<32} LAST ERROR")
    for r in rows:
        print(
            f"{r['id']:>10}  {r['event_type']:<24} {r['key'][:32]:<32} {r['attempts']:>5}  "
            f"{r['dead_lettered_at']:<32} {r['last_error'] or ''}"
        )
    if total > len(rows):
        print(f"... {total - len(rows)} more (use --limit)")


def _ids(ids: list[int]) -> str:
    return (": " if ids else "") + ", ".join(map(str, ids))


async def run(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.db import dead_letters
    from gateway.db.pool import create_pool

    settings = await locate(settings, "DATABASE_URL")
    if args.dlq_action == "replay" and not args.all_ and not args.ids:
        print("paygate dlq replay: give event ids or --all", file=sys.stderr)
        return 2
    if args.dlq_action == "replay" and args.all_ and args.ids:
        print("paygate dlq replay: ids and --all are exclusive", file=sys.stderr)
        return 2
    pool = await create_pool(settings, min_size=1, max_size=2)
    try:
        if args.dlq_action == "list":
            rows = await dead_letters.list_dead_letters(pool, max(args.limit, 1))
            _print_table(rows, await dead_letters.count(pool))
            return 0
        replayed = await dead_letters.replay(
            pool, args.ids, all_=args.all_, actor=cli_actor(args.actor)
        )
        print(f"replayed {len(replayed)} event(s)" + _ids(replayed))
        # An id that is not a dead letter (never was, or already replayed): said by id and
        # the exit code, so a script does not take "nothing happened" for success.
        missed = sorted(set(args.ids) - set(replayed))
        if missed:
            print(
                f"paygate dlq replay: not dead letters, left alone{_ids(missed)}",
                file=sys.stderr,
            )
            return 1
        return 0
    finally:
        await pool.close()


COMMAND = Command("dlq", "outbox dead letters: list, replay", run, _arguments)
