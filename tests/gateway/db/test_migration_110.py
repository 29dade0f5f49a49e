"""sql/110 on a database that already holds payments: rows are carried unchanged, no
partition is rewritten, and the new bounds hold for new rows."""

from __future__ import annotations

import shutil
import uuid
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from gateway.db.event_log import queued_events_sql
from gateway.db.migrations import migrate, sql_dir
from tests.oracles import payment_recorded

SENT = datetime(2026, 11, 23, 19, 30)  # stored in UTC by the code before 110


@pytest.fixture
async def old_database(stack: Any, tmp_path: Path) -> Any:
    """A database migrated up to (not including) 110, dropped afterwards."""
    name = f"mig110_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(stack.database_url)
    await admin.execute(f"CREATE DATABASE {name}")
    dsn = stack.database_url.rsplit("/", 1)[0] + "/" + name
    before = tmp_path / "sql"
    before.mkdir()
    for f in sorted(sql_dir().glob("*.sql")):
        if f.name < "110":
            shutil.copy(f, before)
    await migrate(dsn, before)
    try:
        yield dsn
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def test_existing_rows_are_carried_without_rewriting_a_partition(old_database: str) -> None:
    conn = await asyncpg.connect(old_database)
    try:
        await conn.execute(
            "CREATE TABLE payment_service.payments_2026_11 PARTITION OF payment_service.payments"
            " FOR VALUES FROM ('2026-11-01') TO ('2026-12-01')"
        )
        pid, event_id = uuid.uuid4(), uuid.uuid4()
        await conn.execute(
            "INSERT INTO payment_service.payments (id, reference_number, loan_account_number,"
            " cif, amount, payment_date, payment_channel, source, metadata, status)"
            " VALUES ($1, 'OLD-1', $2, $3, 10.5, $4, 'card', 'webhook', '{\"currency\": \"kwd\"}',"
            " 'succeeded')",
            pid, "L" * 20, "C" * 20, SENT,
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO payment_service.outbox (event_id, event_type, topic, key, payment_id,"
            " payment_date, status) VALUES ($1, 'payment.recorded', 't', 'OLD-1', $2, $3,"
            " 'succeeded')",
            event_id, pid, SENT,
        )  # fmt: skip
        files = (
            "SELECT relname, relfilenode FROM pg_class WHERE relname LIKE 'payments_20%'"
            " OR relname LIKE 'payments_default%'"
        )
        before = dict(await conn.fetch(files))

        assert "110_money_and_dates" in await migrate(old_database)

        after = dict(await conn.fetch(files))
        # No partition was rewritten; only the indexes on the widened columns were rebuilt
        # (docs/deploying.md: the cost, and the online way for a large table).
        # The later migrations run too: sql/174 drops the plain reference index.
        assert set(before) - set(after) == {
            "payments_2026_11_reference_number_idx",
            "payments_default_reference_number_idx",
        }
        changed = {name for name in after if name in before and after[name] != before[name]}
        assert changed == {
            "payments_2026_11_cif_payment_date_idx",
            "payments_2026_11_loan_account_number_payment_date_idx",
            "payments_default_cif_payment_date_idx",
            "payments_default_loan_account_number_payment_date_idx",
        }
        row = await conn.fetchrow(
            "SELECT amount::text AS amount, currency, payment_at, payment_date, cif"
            " FROM payment_service.payments WHERE id = $1",
            pid,
        )
        assert dict(row) == {"amount": "10.50", "currency": None, "payment_at": None,
                             "payment_date": SENT, "cif": "C" * 20}  # fmt: skip
        payload = await conn.fetchval(
            f"SELECT payload FROM ({queued_events_sql()}) e WHERE key = 'OLD-1'"
        )
        expected = payment_recorded(
            payment_id=pid, reference_number="OLD-1", loan_account_number="L" * 20,
            cif="C" * 20, amount=Decimal("10.50"), payment_date=SENT, payment_channel="card",
            source="webhook", metadata={"currency": "kwd"}, status="succeeded",
        )  # fmt: skip
        got, want = orjson.loads(payload), orjson.loads(expected.payload)
        assert got["payment"] == want["payment"]  # the event of an old row is unchanged
        assert b'"currency" : ' not in bytes(payload).split(b'"metadata"')[0]

        # The new bounds, checked for new rows; old rows satisfy them (VALIDATE passes).
        insert = (
            "INSERT INTO payment_service.payments (id, reference_number, loan_account_number,"
            " cif, amount, currency, payment_date, source) VALUES ($1, $2, $3, 'C', $4, $5,"
            " '2026-11-24', 'webhook')"
        )
        await conn.execute(insert, uuid.uuid4(), "NEW-3", "L" * 500, Decimal("12.345"), "KWD")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(insert, uuid.uuid4(), "NEW-4", "L", Decimal("1.2345"), "KWD")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(insert, uuid.uuid4(), "NEW-5", "L", Decimal("1.00"), "kwd")
        with pytest.raises(asyncpg.StringDataRightTruncationError):
            await conn.execute(insert, uuid.uuid4(), "NEW-6", "L" * 501, Decimal("1.00"), None)
        await conn.execute(
            "ALTER TABLE payment_service.payments VALIDATE CONSTRAINT payments_amount_check"
        )
        assert await migrate(old_database) == []
    finally:
        await conn.close()


async def test_the_online_widening_in_the_docs_leaves_the_migration_nothing_to_rebuild(
    old_database: str,
) -> None:
    """docs/deploying.md: widen first without locking the table for an index build; then
    sql/110 finds the columns wide and rebuilds nothing."""
    conn = await asyncpg.connect(old_database)
    try:
        await conn.execute(
            "CREATE TABLE payment_service.payments_2026_11 PARTITION OF payment_service.payments"
            " FOR VALUES FROM ('2026-11-01') TO ('2026-12-01')"
        )
        partitions = [
            r["relname"]
            for r in await conn.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'payment_service.payments'::regclass ORDER BY 1"
            )
        ]
        for column, index in (("cif", "idx_payments_cif"),
                              ("loan_account_number", "idx_payments_loan_account")):  # fmt: skip
            await conn.execute(f"DROP INDEX payment_service.{index}")
            await conn.execute(
                f"ALTER TABLE payment_service.payments ALTER COLUMN {column} TYPE VARCHAR(500)"
            )
            await conn.execute(
                f"CREATE INDEX {index} ON ONLY payment_service.payments"
                f" ({column}, payment_date DESC)"
            )
            for part in partitions:
                await conn.execute(
                    f"CREATE INDEX CONCURRENTLY {part}_{column}_idx"
                    f" ON payment_service.{part} ({column}, payment_date DESC)"
                )
                await conn.execute(
                    f"ALTER INDEX payment_service.{index}"
                    f" ATTACH PARTITION payment_service.{part}_{column}_idx"
                )
        files = "SELECT relname, relfilenode FROM pg_class WHERE relname LIKE 'payments_%'"
        before = dict(await conn.fetch(files))
        assert "110_money_and_dates" in await migrate(old_database)
        # Later migrations may add indexes of their own, and sql/174 drops one.
        after = dict(await conn.fetch(files))
        kept = {name: node for name, node in before.items() if "reference_number_idx" not in name}
        assert {name: after[name] for name in kept} == kept
        valid = await conn.fetch(
            "SELECT relname FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid"
            " WHERE relname IN ('idx_payments_cif', 'idx_payments_loan_account') AND i.indisvalid"
        )
        assert len(valid) == 2  # every partition's index attached: the parents are valid
    finally:
        await conn.close()
