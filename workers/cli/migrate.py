"""`paygate migrate`: apply pending migrations, then create the monthly partitions."""

from __future__ import annotations

import argparse
import logging

from gateway.config import Settings
from workers.cli.command import Command
from workers.cli.discovery import locate

log = logging.getLogger("paygate")


async def prepare_database(settings: Settings) -> None:
    """Migrate, then make sure the monthly partitions exist before traffic arrives."""
    from gateway.db.migrations import migrate
    from gateway.db.pool import create_pool
    from workers.partitions import ensure_partitions

    applied = await migrate(settings.database_url)
    if applied:
        log.info("migrations applied: %s", ", ".join(applied))
    pool = await create_pool(settings, min_size=1, max_size=2)
    try:
        await ensure_partitions(pool, settings)
    finally:
        await pool.close()


async def run(args: argparse.Namespace, settings: Settings) -> int:
    settings = await locate(settings, "DATABASE_URL")
    await prepare_database(settings)
    return 0


COMMAND = Command("migrate", "apply migrations and create partitions", run)
