"""Space for the event log without VACUUM: the generation that comes round next is
TRUNCATEd once every lane's cursor shows all of its rows, and old cursor rows are
deleted. Run by the relay that owns lane 0 (one relay at a time), every UPKEEP_SECONDS.

The log has three generations of ten minutes (sql/170's `event_generation`): rows are
written to the current one, and the next one holds rows from twenty minutes ago. The
check and the TRUNCATE run under an ACCESS EXCLUSIVE lock on that partition, so no
transaction still writing to it (one that began in its time) can slip rows in between;
the lock is asked with a short timeout, so a reader holding the partition costs a skipped
upkeep, not a stalled relay. A lane whose cursor does not show every row of the partition
(a relay far behind, or none running) keeps it, and the generation is written to again
when its time comes: a larger log, never a lost event.
"""

from __future__ import annotations

import logging

import asyncpg

log = logging.getLogger(__name__)

UPKEEP_SECONDS = 30.0
GENERATIONS = 3

_CONSUMED = """
SELECT NOT EXISTS (
    SELECT 1 FROM payment_service.event_log_{gen} e
    JOIN payment_service.event_lane_cursors() c ON c.lane = e.lane
    WHERE NOT pg_visible_in_snapshot(e.txid, c.done)
)
"""

_PRUNE_CURSORS = """
DELETE FROM payment_service.event_cursors c
USING (SELECT lane, max(id) AS newest FROM payment_service.event_cursors GROUP BY lane) n
WHERE c.lane = n.lane AND c.id < n.newest
"""


async def upkeep(conn: asyncpg.Connection) -> None:
    current = int(await conn.fetchval("SELECT payment_service.event_generation()"))
    await truncate_if_consumed(conn, (current + 1) % GENERATIONS)
    await conn.execute(_PRUNE_CURSORS)


async def truncate_if_consumed(conn: asyncpg.Connection, gen: int) -> bool:
    """TRUNCATE generation `gen` if it has rows and every cursor shows all of them."""
    table = f"payment_service.event_log_{int(gen)}"
    if not await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
        return False
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL lock_timeout = '200ms'; SET LOCAL enable_seqscan = on")
            await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            if not await conn.fetchval(_CONSUMED.format(gen=int(gen))):
                return False
            await conn.execute(f"TRUNCATE {table}")
    except asyncpg.LockNotAvailableError:
        log.info("event log generation %d busy; truncated at a later upkeep", gen)
        return False
    log.info("event log generation %d truncated", gen)
    return True
