"""`paygate dlq list` and `paygate dlq replay [ID ...|--all]`: the outbox's dead letters
from the command line (the same functions back the ops API)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from gateway.config import Settings
from workers.cli import main as cli
from workers.dlq import count_dead_letters, list_dead_letters, replay


def _parser(sub: argparse._SubParsersAction[Any]) -> None:
    dlq = sub.add_parser("dlq", help="outbox dead letters: list, replay")
    actions = dlq.add_subparsers(dest="dlq_action", required=True)
    ls = actions.add_parser("list", help="show dead-lettered events, oldest first")
    ls.add_argument("--limit", type=int, default=100)
    rp = actions.add_parser("replay", help="publish dead-lettered events again")
    rp.add_argument("ids", nargs="*", type=int, metavar="ID")
    rp.add_argument("--all", dest="all_", action="store_true", help="every dead letter")
    rp.add_argument("--actor", default="", help="who replays (audit log); default cli:$USER")


cli._EXTRA_PARSERS.append(_parser)


def _actor(given: str) -> str:
    if given:
        return given
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


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


@cli.command("dlq")
async def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.db.pool import create_pool

    cli._require_urls(settings)
    if args.dlq_action == "replay" and not args.all_ and not args.ids:
        print("paygate dlq replay: give event ids or --all", file=sys.stderr)
        return 2
    if args.dlq_action == "replay" and args.all_ and args.ids:
        print("paygate dlq replay: ids and --all are exclusive", file=sys.stderr)
        return 2
    pool = await create_pool(settings, min_size=1, max_size=2)
    try:
        if args.dlq_action == "list":
            rows = await list_dead_letters(pool, max(args.limit, 1))
            _print_table(rows, await count_dead_letters(pool))
            return 0
        n = await replay(pool, args.ids or None, all_=args.all_, actor=_actor(args.actor))
        print(f"replayed {n} event(s)")
        if args.ids and n < len(set(args.ids)):
            print("some ids were not dead letters and were left alone", file=sys.stderr)
        return 0
    finally:
        await pool.close()
