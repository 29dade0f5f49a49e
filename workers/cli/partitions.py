"""`paygate partitions status|maintain`: what partition maintenance sees and does."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.config import Settings
from gateway.db.pool import create_pool
from workers.cli import main as cli


def _parser(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser("partitions", help="partition status and on-demand maintenance")
    p.add_argument("action", choices=("status", "maintain"))


cli._EXTRA_PARSERS.append(_parser)


@cli.command("partitions")
async def cmd_partitions(args: argparse.Namespace, settings: Settings) -> int:
    from workers.partitions import PartitionMaintainer, format_status

    if not settings.database_url:
        raise cli.ConfigError("DATABASE_URL is not set")
    pool = await create_pool(settings, min_size=1, max_size=2)
    try:
        maintainer = PartitionMaintainer(pool, settings)
        if args.action == "status":
            print(format_status(await maintainer.status()))
            return 0
        report = await maintainer.maintain()
        print(report)
        return 0 if report.result in ("ok", "skipped") else 1
    finally:
        await pool.close()
