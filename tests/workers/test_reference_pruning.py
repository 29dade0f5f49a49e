"""Pruning expired references walks forward in `created_at` a batch at a time: rows that
share a timestamp across a batch's end are all deleted, and nothing at or after the
cutoff is."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import asyncpg

from tests.workers import test_partitions as partition_tests
from tests.workers.test_partitions import utc
from workers.reference_pruning import prune_expired

scratch = partition_tests.scratch  # a schema shaped like the real one
COLUMNS = ["reference_number", "payment_id", "payment_date", "payload_hash", "created_at"]


async def test_ties_across_batches_and_the_cutoff(db: asyncpg.Pool, scratch: str) -> None:
    cutoff = utc(2026, 8, 1)
    same = cutoff - timedelta(days=3)
    rows = [(f"tie-{i}", same) for i in range(7)]  # one instant, over three batches
    rows += [(f"old-{i}", cutoff - timedelta(days=10, seconds=i)) for i in range(4)]
    rows += [("at-cutoff", cutoff), ("after", cutoff + timedelta(seconds=1))]
    await db.copy_records_to_table(
        "payment_references",
        schema_name=scratch,
        columns=COLUMNS,
        records=[(ref, uuid.uuid4(), datetime(2026, 1, 1), b"h", at) for ref, at in rows],
    )
    async with db.acquire() as conn:
        deleted, batches = await prune_expired(
            conn, f"{scratch}.payment_references", cutoff, batch_size=3, idle_ratio=0
        )
    assert (deleted, batches) == (11, 4)  # 3 + 3 + 3 + 2
    left = await db.fetch(f"SELECT reference_number FROM {scratch}.payment_references")
    assert sorted(r[0] for r in left) == ["after", "at-cutoff"]
