"""What the reference-search index (sql/151, idx_payments_reference_folded) costs the hot
path: the recording statement (gateway.db.payments.record_batch, batches of 500 new
payments) timed with and without the index, alternating in one run on a private stack,
with the WAL each payment generated.

    python -m bench.reference_index --rounds 6 --batches 20

Each round records `--batches` batches once with the index and once without it (the
order alternating), so load on a shared machine falls on both sides alike; the figure to
read is the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from bench.stack import bench_stack
from gateway.db.payments import Candidate, record_batch
from gateway.domain.model import Payment

INDEX = "idx_payments_reference_folded"
CREATE = (
    f"CREATE INDEX {INDEX} ON payment_service.payments (lower(reference_number) text_pattern_ops)"
)
BATCH = 500


def _batch(day: datetime) -> list[Candidate]:
    out = []
    for _ in range(BATCH):
        ref = f"INV-{uuid.uuid4().hex[:20]}"
        payment = Payment(ref, "LA-0001", "CIF-0001", Decimal("125.50"), day, "bank_transfer")
        out.append(Candidate(payment, "generic", f"msg_{ref}", b'{"reference_number":"x"}'))
    return out


async def _record(conn: asyncpg.Connection, batches: int, day: datetime) -> tuple[float, float]:
    """µs and WAL bytes per payment over `batches` batches."""
    work = [_batch(day) for _ in range(batches)]
    wal0 = await conn.fetchval("SELECT pg_current_wal_insert_lsn()")
    started = time.perf_counter()
    for candidates in work:
        async with conn.transaction():
            await record_batch(conn, candidates, source="webhook", topic="t", actor="bench")
    elapsed = time.perf_counter() - started
    wal = await conn.fetchval("SELECT pg_current_wal_insert_lsn() - $1::pg_lsn", wal0)
    n = batches * BATCH
    return elapsed / n * 1e6, float(wal) / n


async def main_async(args: argparse.Namespace) -> None:
    async with bench_stack("paygate-refidx-") as stack:
        conn = await asyncpg.connect(stack.pg.url)
        day = datetime.now(UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
        await _record(conn, 4, day)  # warm the caches and the partitions
        await conn.execute(f"DROP INDEX payment_service.{INDEX}")  # the migration made it
        results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        for r in range(args.rounds):
            for with_index in (True, False) if r % 2 == 0 else (False, True):
                await conn.execute(CREATE if with_index else f"DROP INDEX IF EXISTS "
                                   f"payment_service.{INDEX}")  # fmt: skip
                await conn.execute("CHECKPOINT")
                results[with_index].append(await _record(conn, args.batches, day))
            await conn.execute(f"DROP INDEX IF EXISTS payment_service.{INDEX}")
        await conn.close()
    for label, key in (("with the index", True), ("without", False)):
        us = statistics.median(x[0] for x in results[key])
        wal = statistics.median(x[1] for x in results[key])
        print(f"{label:15} {us:7.1f} µs/payment  {wal:7.0f} WAL bytes/payment")
    ratio_us = statistics.median(
        a[0] / b[0] for a, b in zip(results[True], results[False], strict=True)
    )
    ratio_wal = statistics.median(
        a[1] / b[1] for a, b in zip(results[True], results[False], strict=True)
    )
    print(f"ratio (with/without, median of rounds): time {ratio_us:.3f}, WAL {ratio_wal:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--batches", type=int, default=20)
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
