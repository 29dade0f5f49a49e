"""`paygate dlq list` and `paygate dlq replay [ID ...|--all]`: the outbox's dead letters
from the command line (the same functions back the ops API)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gateway.config import Settings
from workers.cli.command import Command, cli_actor


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


async def run(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.db import dead_letters
    from gateway.db.pool import create_pool

    settings.require_database()
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
        n = len(replayed)
        print(f"replayed {n} event(s)")
        if args.ids and n < len(set(args.ids)):
            print("some ids were not dead letters and were left alone", file=sys.stderr)
        return 0
    finally:
        await pool.close()


COMMAND = Command("dlq", "outbox dead letters: list, replay", run, _arguments)
