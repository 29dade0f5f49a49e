"""Webhook outcome counts (gateway.observability.outcomes) against a real Postgres: counts
from several processes add up by day, channel and outcome, and a database outage delays
them without losing any."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from gateway.config import Settings
from gateway.db import counts
from gateway.db.pool import create_pool
from gateway.observability.outcomes import OutcomeTally
from tests.conftest import make_settings


def _today() -> Any:
    return datetime.now(UTC).date()


async def test_counts_of_two_processes_add_up(db: asyncpg.Pool) -> None:
    one, two = OutcomeTally(), OutcomeTally()
    for _ in range(3):
        one.add("generic", "created")
    one.add("stripe", "unauthorized")
    two.add("generic", "created")
    two.add("x" * 150, "y" * 40)  # longer than the columns: cut, not refused
    await one.flush(db)
    await two.flush(db)
    await two.flush(db)  # nothing pending: nothing added
    assert await counts.webhooks_answered(db, _today(), 5) == {
        "created": 4, "unauthorized": 1, "y" * 32: 1,
    }  # fmt: skip
    by_channel = await db.fetch(
        "SELECT channel, outcome, answered FROM payment_service.webhook_outcomes ORDER BY 1, 2"
    )
    assert [tuple(r) for r in by_channel] == [
        ("generic", "created", 4), ("stripe", "unauthorized", 1), ("x" * 100, "y" * 32, 1),
    ]  # fmt: skip


async def test_an_outage_delays_the_counts_without_losing_them(
    db: asyncpg.Pool, stack: Any
) -> None:
    settings: Settings = make_settings(stack)
    pool = await create_pool(settings, min_size=1, max_size=2)
    tally = OutcomeTally()
    try:
        tally.add("generic", "created")
        await stack.postgres.stop()
        try:
            tally.add("generic", "created")
            await tally.flush(pool)  # refused: kept, not raised
        finally:
            await stack.postgres.start()
        tally.add("generic", "duplicate")
        await tally.flush(pool)
    finally:
        await pool.close()
    assert await counts.webhooks_answered(db, _today(), 5) == {"created": 2, "duplicate": 1}
