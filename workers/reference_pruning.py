"""Deleting expired `payment_references`, a batch at a time, walking forward in time.

Each batch deletes the next `batch_size` rows by `created_at` from where the last one
stopped (a keyset cursor), by their ctid, each in its own short transaction. Two costs
of the obvious `DELETE ... WHERE key IN (SELECT ... ORDER BY created_at LIMIT n)` go:

- every batch restarting at the oldest entry of the `created_at` index walks over the
  entries of the rows earlier batches deleted (dead, not yet vacuumed), so a day of
  references cost more per batch the further it got;
- locking each row first (`FOR UPDATE SKIP LOCKED`) wrote every row twice, and matching
  the rows again through the primary key cost a second index descent per row. Nothing
  else locks a reference row (a recording claims a new reference with
  `INSERT ... ON CONFLICT DO NOTHING`, which waits for a concurrent delete of the same key
  and then inserts it), so the lock bought nothing.

Measured on a million live references and a day (864,000) expired, alone: 19.7 s and 221
MB of WAL before, 7.5 s and 157 MB after, the last batches no slower than the first
(bench/RESULTS.md, "Cost against table size").

Between batches the pruner rests as long as the batch took (`idle_ratio`), so it uses at
most about half of one core however large the backlog (a day after an outage, say): the
hot path shares the machine with it, and a day of references still goes in seconds.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import asyncpg

# The cursor's start: before any row.
_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


def _batch_sql(table: str) -> str:
    return f"""
WITH gone AS (
    DELETE FROM {table}
    WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM {table}
        WHERE created_at >= $1 AND created_at < $2
        ORDER BY created_at
        LIMIT $3
    ))
    RETURNING created_at
)
SELECT count(*) AS deleted, max(created_at) AS last FROM gone
"""


async def prune_expired(
    conn: asyncpg.Connection,
    table: str,
    cutoff: datetime,
    batch_size: int,
    idle_ratio: float = 1.0,
) -> tuple[int, int]:
    """Delete the rows of `table` (a quoted, qualified name) created before `cutoff`;
    return (rows deleted, batches run)."""
    sql = _batch_sql(table)
    cursor, deleted, batches = _EPOCH, 0, 0
    while True:
        began = time.monotonic()
        row = await conn.fetchrow(sql, cursor, cutoff, batch_size)
        assert row is not None
        batches += 1
        deleted += row["deleted"]
        if row["deleted"] < batch_size:
            return deleted, batches
        cursor = row["last"]
        await asyncio.sleep(idle_ratio * (time.monotonic() - began))
