"""`paygate partitions status|maintain`: what partition maintenance sees and does.

`status` prints every partition with its rows and the action planned for it, then each
retained table against its retention: rows, bytes, the oldest data kept, the moment
retention keeps from, and what the next maintenance run will detach, drop or delete."""

from __future__ import annotations

import argparse

from gateway.config import Settings
from workers.cli.command import Command
from workers.cli.discovery import locate


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("status", "maintain"))
    p.add_argument(
        "--force",
        action="store_true",
        help="maintain: retire payments months past retention even if work still depends "
        "on them (pending payments, parked updates, unpublished events, open exceptions)",
    )


async def run(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.db.pool import create_pool
    from gateway.db.retention import format_retention, retention_report
    from workers.partitions import PartitionMaintainer, format_report, format_status

    settings = await locate(settings, "DATABASE_URL")
    pool = await create_pool(settings, min_size=1, max_size=2)
    try:
        maintainer = PartitionMaintainer(pool, settings, force=args.force)
        if args.action == "status":
            print(format_status(await maintainer.status()))
            print()
            print(format_retention(await retention_report(pool, settings)))
            return 0
        report = await maintainer.maintain()
        print(format_report(report))
        return 0 if report.result in ("ok", "skipped") else 1
    finally:
        await pool.close()


COMMAND = Command("partitions", "partition status and on-demand maintenance", run, _arguments)
