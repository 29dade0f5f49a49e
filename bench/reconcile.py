"""Reconciliation bench: an N-line statement against N payments, import + match timed.

    python -m bench.reconcile --rows 1000000

Starts its own embedded Postgres in a temp dir (or uses DATABASE_URL: it truncates the
payment and reconciliation tables there, so never point it at data you care about),
migrates, COPYs N payments (and their references) dated over the last 28 days, and
writes an N-line CSV statement with a mix of outcomes: ~1% amount mismatches, ~1%
fee deductions (2.9% + 0.30), ~1% status mismatches, ~1% references we never saw,
~1% of our payments left out, and a few malformed lines. Then it times what the upload
endpoint does: spool the statement (read in 256 KiB chunks) to a temporary file with its
digest, then `reconcile_statement`, and prints a Markdown block for bench/RESULTS.md
with the duration, lines/s and this process's RSS before, during (max) and after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from bench.procstats import rss_mib
from gateway.config import Settings
from gateway.db.migrations import migrate
from gateway.db.pool import create_pool
from gateway.db.reconciliation import reconcile_statement
from gateway.domain.statements import StatementOptions, expected_after_fee
from gateway.http.statement_upload import UploadLimits, spool
from workers.cli.devstack import EmbeddedPostgres

FEE_PERCENT = Decimal("2.9")
FEE_FIXED = Decimal("0.30")
MALFORMED = 50


def _payment(i: int, rng: random.Random, start: datetime) -> tuple[str, Decimal, datetime]:
    amount = Decimal(rng.randint(100, 5_000_000)).scaleb(-2)
    return f"BENCH-{i:09d}", amount, start + timedelta(seconds=rng.randrange(27 * 86400))


def payments(n: int, start: datetime, seed: int = 7) -> Iterator[tuple[str, Decimal, datetime]]:
    rng = random.Random(seed)
    for i in range(n):
        yield _payment(i, rng, start)


async def load_payments(url: str, n: int, start: datetime) -> float:
    began = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        chunk: list[tuple[str, Decimal, datetime]] = []

        async def flush() -> None:
            ids = [uuid.uuid4() for _ in chunk]
            await conn.copy_records_to_table(
                "payments", schema_name="payment_service",
                columns=["id", "reference_number", "loan_account_number", "cif", "amount",
                         "payment_date", "source", "status"],
                records=[(pid, ref, "LA-1", "CIF-1", amt, day, "webhook", "succeeded")
                         for pid, (ref, amt, day) in zip(ids, chunk, strict=True)],
            )  # fmt: skip
            await conn.copy_records_to_table(
                "payment_references", schema_name="payment_service",
                columns=["reference_number", "payment_id", "payment_date", "payload_hash"],
                records=[(ref, pid, day, b"x") for pid, (ref, _, day) in zip(ids, chunk, strict=True)],
            )  # fmt: skip

        for p in payments(n, start):
            chunk.append(p)
            if len(chunk) == 100_000:
                await flush()
                chunk = []
        if chunk:
            await flush()
        await conn.execute("ANALYZE payment_service.payments")
        await conn.execute("ANALYZE payment_service.payment_references")
    finally:
        await conn.close()
    return time.perf_counter() - began


def write_statement(path: Path, n: int, start: datetime) -> dict[str, int]:
    """Line i describes payment i (mostly faithfully); the mix is deterministic."""
    return write_statement_of(path, payments(n, start), n)


def write_statement_of(
    path: Path, rows: Iterable[tuple[str, Decimal, datetime]], n: int
) -> dict[str, int]:
    """A statement of `n` payments `rows` (reference, amount, date) with the bench's mix
    of outcomes; bench.scale writes one over payments already in its tables."""
    rng = random.Random(11)
    made = dict.fromkeys(("fee", "amount", "status", "unknown", "left_out", "malformed"), 0)
    with path.open("w") as f:
        f.write("reference_number,amount,payment_date,status\n")
        for i, (ref, amount, day) in enumerate(rows):
            roll = rng.random()
            status = ""
            if roll < 0.01:
                made["left_out"] += 1
                continue
            if roll < 0.02:
                ref = f"UNKNOWN-{i:09d}"
                made["unknown"] += 1
            elif roll < 0.03:
                amount = amount + Decimal("1.00")
                made["amount"] += 1
            elif roll < 0.04 and amount > 1:
                amount = expected_after_fee(amount, FEE_PERCENT, FEE_FIXED)
                made["fee"] += 1
            elif roll < 0.05:
                status = "failed"
                made["status"] += 1
            elif i % (n // MALFORMED or 1) == 0 and made["malformed"] < MALFORMED:
                f.write(f"{ref},12.345,{day:%Y-%m-%d},\n")
                made["malformed"] += 1
                continue
            f.write(f"{ref},{amount},{day:%Y-%m-%dT%H:%M:%S},{status}\n")
    return made


async def stream(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(256 * 1024):
            yield chunk


async def reconcile(settings: Settings, path: Path) -> dict[str, Any]:
    pool = await create_pool(settings, min_size=1, max_size=2)
    samples = [rss_mib()]
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            samples.append(rss_mib())
            await asyncio.sleep(0.25)

    sampler = asyncio.create_task(sample())
    try:
        began = time.perf_counter()
        statement = await spool(stream(path), UploadLimits(2**40, 2**20, 3600.0), path.name)
        try:
            imported = await reconcile_statement(
                pool,
                statement,
                StatementOptions(fee_percent=FEE_PERCENT, fee_fixed=FEE_FIXED, source=path.name),
                topic="payment.events",
                actor="bench",
            )
        finally:
            statement.close()
        seconds = time.perf_counter() - began
        summary = imported.summary
    finally:
        stop.set()
        await sampler
        await pool.close()
    samples.append(rss_mib())
    return {"summary": summary, "seconds": seconds, "rss": samples}


async def run(args: argparse.Namespace) -> int:
    scratch = Path(tempfile.mkdtemp(prefix="paygate-bench-reconcile-"))
    scratch.chmod(0o755)
    server: EmbeddedPostgres | None = None
    url = os.environ.get("DATABASE_URL", "")
    n = args.rows
    start = (datetime.now(UTC) - timedelta(days=28)).replace(tzinfo=None, microsecond=0)
    try:
        if not url:
            server = EmbeddedPostgres(scratch / "postgres")
            await server.start()
            url = server.url
        await migrate(url)
        settings = Settings.from_env({}, database_url=url, kafka_topic="payment.events")
        conn = await asyncpg.connect(url)
        await conn.execute(
            "TRUNCATE payment_service.payments, payment_service.payment_references, "
            "payment_service.outbox, payment_service.audit_log, "
            "payment_service.reconciliation_items, payment_service.reconciliation_runs"
        )
        version = await conn.fetchval("SHOW server_version")
        await conn.close()
        print(f"loading {n:,} payments...", file=sys.stderr)
        load_s = await load_payments(url, n, start)
        path = scratch / "statement.csv"
        made = write_statement(path, n, start)
        size_mib = path.stat().st_size / 2**20
        print(f"reconciling a {size_mib:.0f} MiB statement...", file=sys.stderr)
        result = await reconcile(settings, path)
    finally:
        if server is not None:
            await server.stop()
        shutil.rmtree(scratch, ignore_errors=True)  # a million-line statement and a server

    s = result["summary"]
    rss = result["rss"]
    lines = s["total_lines"]
    print(
        f"""
### Statement reconciliation ({n:,} lines against {n:,} payments)

`python -m bench.reconcile --rows {n}` - PostgreSQL {version}, {os.cpu_count()} CPUs, \
{"embedded server" if server else "DATABASE_URL"}; statement {size_mib:.0f} MiB, streamed in 256 KiB chunks.

- Seeding {n:,} payments + references with COPY: {load_s:.1f} s
- Spool + import + match (parse, COPY into a temp table, group, classify, period, \
missing-in-statement, open items, events): \
**{result["seconds"]:.1f} s**, {lines / result["seconds"]:,.0f} lines/s
- Counts: {s["counts"]}; malformed lines: {s["malformed_lines"]} (planted: {made["malformed"]})
- Planted: {made}
- Bench process RSS: start {rss[0]:.0f} MiB, max {max(rss):.0f} MiB, end {rss[-1]:.0f} MiB
"""
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
