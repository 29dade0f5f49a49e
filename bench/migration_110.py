"""What sql/110 costs on a table that already holds a year of payments, and what the online
widening of docs/deploying.md costs instead.

    python -m bench.migration_110 --payments 1000000 [--postgres embedded,debian]

For each server: a private PostgreSQL migrated up to 110, twelve monthly partitions
filled with `--payments` rows, a VACUUM ANALYZE; then, timed: the baseline (a full scan of
the table, what re-validating a CHECK would cost), sql/110 as `paygate migrate` runs it
(an ACCESS EXCLUSIVE lock for its whole duration: webhooks answer 503 meanwhile), and on
a second, identical database the online procedure followed by the migration. Every figure
is printed with its ratio to the same run's scan.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

import asyncpg

from gateway.db.migrations import migrate, sql_dir
from workers.cli.devstack import DEBIAN_POSTGRES_15, EmbeddedPostgres

FILL = """
INSERT INTO payment_service.payments
    (id, reference_number, loan_account_number, cif, amount, payment_date, payment_channel,
     source, status)
SELECT gen_random_uuid(), 'REF-' || i, 'LA-' || (i % 50000), 'CIF-' || (i % 200000),
       ((i % 100000 + 1) / 100.0)::numeric(15, 2),
       timestamp '2025-12-01' + ((i % 365) || ' days')::interval, 'card', 'webhook',
       'succeeded'
FROM generate_series(1::bigint, $1) i
"""


async def _prepare(url: str, before: Path, payments: int) -> None:
    await migrate(url, before)
    conn = await asyncpg.connect(url)
    try:
        for month in range(12):
            y, m = 2025 + (11 + month) // 12, (11 + month) % 12 + 1
            ny, nm = y + m // 12, m % 12 + 1
            await conn.execute(
                f"CREATE TABLE payment_service.payments_{y}_{m:02d} PARTITION OF"
                f" payment_service.payments FOR VALUES FROM ('{y}-{m:02d}-01')"
                f" TO ('{ny}-{nm:02d}-01')"
            )
        await conn.execute(FILL, payments)
        await conn.execute("VACUUM ANALYZE payment_service.payments")
    finally:
        await conn.close()


async def _online(url: str) -> None:
    """docs/deploying.md's procedure: each statement on its own, outside a transaction."""
    conn = await asyncpg.connect(url)
    try:
        parts = [
            r["relname"]
            for r in await conn.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'payment_service.payments'::regclass"
            )
        ]
        for column, index in (
            ("cif", "idx_payments_cif"),
            ("loan_account_number", "idx_payments_loan_account"),
        ):
            await conn.execute(f"DROP INDEX payment_service.{index}")
            await conn.execute(
                f"ALTER TABLE payment_service.payments ALTER COLUMN {column} TYPE VARCHAR(500)"
            )
            await conn.execute(
                f"CREATE INDEX {index} ON ONLY payment_service.payments"
                f" ({column}, payment_date DESC)"
            )
            for part in parts:
                await conn.execute(
                    f"CREATE INDEX CONCURRENTLY {part}_{column}_w ON payment_service.{part}"
                    f" ({column}, payment_date DESC)"
                )
                await conn.execute(
                    f"ALTER INDEX payment_service.{index} ATTACH PARTITION"
                    f" payment_service.{part}_{column}_w"
                )
    finally:
        await conn.close()


async def _timed(coro: object) -> float:
    started = time.perf_counter()
    await coro  # type: ignore[misc]
    return time.perf_counter() - started


async def run_one(label: str, bin_dir: Path | None, payments: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-mig110-"))
    root.chmod(0o755)
    before = root / "sql"
    before.mkdir()
    for f in sorted(sql_dir().glob("*.sql")):
        if f.name < "110":
            shutil.copy(f, before)
    pg = EmbeddedPostgres(root / "pg", bin_dir=bin_dir)
    try:
        await pg.start()
        admin = await asyncpg.connect(pg.url)
        await admin.execute("CREATE DATABASE online")
        await admin.close()
        online_url = pg.url.rsplit("/", 1)[0] + "/online"
        await _prepare(pg.url, before, payments)
        await _prepare(online_url, before, payments)
        conn = await asyncpg.connect(pg.url)
        try:
            scan = await _timed(conn.fetchval("SELECT count(*) FROM payment_service.payments"))
        finally:
            await conn.close()
        locked = await _timed(migrate(pg.url))
        online = await _timed(_online(online_url))
        after = await _timed(migrate(online_url))
        print(f"{label}: {payments:,} payments in 12 partitions")
        print(f"  baseline, a full scan          {scan:8.2f} s  1.00x")
        print(f"  sql/110 (table locked)         {locked:8.2f} s  {locked / scan:6.2f}x")
        print(f"  online widening (not locked)   {online:8.2f} s  {online / scan:6.2f}x")
        print(f"  then sql/110 (table locked)    {after:8.2f} s  {after / scan:6.2f}x")
    finally:
        await pg.stop()
        shutil.rmtree(root, ignore_errors=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=1_000_000)
    parser.add_argument("--postgres", default="embedded", help="embedded,debian (comma list)")
    args = parser.parse_args()
    for name in args.postgres.split(","):
        bin_dir = DEBIAN_POSTGRES_15 if name == "debian" else None
        await run_one("PostgreSQL 15 (Debian)" if bin_dir else "PostgreSQL 18 (embedded)",
                      bin_dir, args.payments)  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
