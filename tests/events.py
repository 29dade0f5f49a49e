"""Reading what paygate queued for the events topic, as tests need it: every event not yet
published (in the event log past its lane's cursor, or in the outbox of retries and dead
letters), with the payload the relay would publish."""

from __future__ import annotations

from typing import Any

import asyncpg

from gateway.db.event_log import queued_events_sql

QUEUED = f"({queued_events_sql()})"  # a subquery: give it an alias


async def queued_count(
    db: asyncpg.Pool | asyncpg.Connection, where: str = "TRUE", *args: Any
) -> int:
    return int(await db.fetchval(f"SELECT count(*) FROM {QUEUED} queued WHERE {where}", *args))


async def queued_events(
    db: asyncpg.Pool | asyncpg.Connection, where: str = "TRUE", *args: Any
) -> list[asyncpg.Record]:
    return list(await db.fetch(f"SELECT * FROM {QUEUED} queued WHERE {where}", *args))


# True when every event was published: nothing past the lanes' cursors, nothing waiting
# or dead in the outbox.
NOTHING_QUEUED = (
    "SELECT (SELECT pending FROM payment_service.events_pending(1)) = 0"
    " AND NOT EXISTS (SELECT 1 FROM payment_service.outbox)"
)
