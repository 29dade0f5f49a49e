"""The retention report (`paygate partitions status`, the console overview) against real
Postgres: per table rows, bytes, the oldest data kept against its retention, and what the
next maintenance run removes, which must be exactly what that run then removes."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import asyncpg
import pytest

from gateway.config import Settings
from gateway.db import retention
from gateway.db.retention import format_retention, next_run_text, retention_report
from tests.workers import test_partitions as partition_tests
from tests.workers.test_partitions import insert_payment, maintainer, utc

# The partition tests' fixtures: a scratch schema shaped like the real one, and settings.
scratch = partition_tests.scratch
psettings = partition_tests.psettings

NOW = utc(2026, 11, 15)


async def insert_references(pool: asyncpg.Pool, schema: str, ages_days: list[int]) -> None:
    records = [
        (
            f"ref-{uuid.uuid4().hex}",
            uuid.uuid4(),
            datetime(2026, 1, 1),
            b"h",
            NOW - timedelta(days=a),
        )
        for a in ages_days
    ]
    await pool.copy_records_to_table(
        "payment_references",
        schema_name=schema,
        records=records,
        columns=["reference_number", "payment_id", "payment_date", "payload_hash", "created_at"],
    )


async def _history(db: asyncpg.Pool, scratch: str, psettings: Settings) -> None:
    """Months 2026-07.. made two months ago; payments in two months past retention (2
    months: it keeps from 2026-09-01) and one kept; references 4 expired, 2 not."""
    await maintainer(db, psettings, scratch).maintain(now=utc(2026, 9, 15))
    for day in (datetime(2026, 7, 3), datetime(2026, 7, 20), datetime(2026, 8, 9)):
        await insert_payment(db, scratch, day)
    for day in (datetime(2026, 10, 1), datetime(2026, 10, 2), datetime(2026, 11, 2)):
        await insert_payment(db, scratch, day)
    await insert_references(db, scratch, [120, 100, 95, 91, 30, 1])


async def test_report_says_what_the_next_run_removes_and_the_run_removes_it(
    db: asyncpg.Pool, scratch: str, psettings: Settings
) -> None:
    await _history(db, scratch, psettings)
    tables = {t.table: t for t in await retention_report(db, psettings, NOW, scratch)}
    assert list(tables) == ["payments", "webhook_events", "audit_log", "payment_references"]

    pay = tables["payments"]
    assert (pay.rows, pay.exact) == (6, True)
    assert pay.bytes > 0
    assert pay.oldest == utc(2026, 7, 1) and pay.keep_from == utc(2026, 9, 1)
    assert pay.overdue
    assert [r.name for r in pay.retiring] == ["payments_2026_07", "payments_2026_08"]
    assert pay.due_rows == 3
    assert next_run_text(pay).startswith("detach payments_2026_07, payments_2026_08 (3 rows, ")
    assert (pay.retention, pay.setting) == ("2 months", "PARTITION_RETENTION_MONTHS")

    refs = tables["payment_references"]
    assert (refs.rows, refs.due_rows, refs.due_capped) == (6, 4, False)
    assert refs.oldest == NOW - timedelta(days=120)
    assert refs.keep_from == NOW - timedelta(days=90)
    assert next_run_text(refs) == "delete 4 expired references"
    assert tables["audit_log"].oldest is None and not tables["audit_log"].overdue

    promised = {r.name for t in tables.values() for r in t.retiring}
    report = await maintainer(db, psettings, scratch).maintain(now=NOW)
    assert set(report.detached) == promised
    assert report.references_pruned == refs.due_rows

    after = {t.table: t for t in await retention_report(db, psettings, NOW, scratch)}
    assert after["payments"].rows == 3 and after["payments"].oldest == utc(2026, 10, 1)
    assert not after["payments"].overdue
    assert [next_run_text(t) for t in after.values()] == ["nothing"] * 4


async def test_drop_and_a_large_backlog_are_named(
    db: asyncpg.Pool, scratch: str, psettings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _history(db, scratch, psettings)
    monkeypatch.setattr(retention, "DUE_COUNT_MAX", 2)
    dropping = psettings.replace(partition_retention_action="drop")
    tables = {t.table: t for t in await retention_report(db, dropping, NOW, scratch)}
    assert next_run_text(tables["payments"]).startswith("drop payments_2026_07, ")
    assert next_run_text(tables["payment_references"]) == "delete more than 2 expired references"


async def test_status_table_has_a_line_per_retained_table(
    db: asyncpg.Pool, scratch: str, psettings: Settings
) -> None:
    await _history(db, scratch, psettings)
    text = format_retention(await retention_report(db, psettings, NOW, scratch))
    head, *lines = text.splitlines()
    assert head.split("  ")[0] == "TABLE" and "NEXT RUN" in head and "OLDEST KEPT" in head
    by_table = {line.split()[0]: line for line in lines}
    assert list(by_table) == ["payments", "webhook_events", "audit_log", "payment_references"]
    cells = by_table["payments"].split()  # the size is two cells: "8.0 kB"
    assert cells[1] == "6" and cells[4] == "2026-07" and cells[5] == "2026-09-01"
    assert "2 months (PARTITION_RETENTION_MONTHS)" in by_table["payments"]
    assert by_table["payments"].endswith(next_run_text(
        next(t for t in await retention_report(db, psettings, NOW, scratch)
             if t.table == "payments")))  # fmt: skip
    assert "delete 4 expired references" in by_table["payment_references"]
