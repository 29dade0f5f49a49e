"""Partition maintenance against real Postgres.

Every test runs in its own scratch schema whose tables are copied from the live ones
(LIKE ... INCLUDING ALL), so detaching and dropping partitions never disturbs the
shared `payment_service` tables other tests use.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from gateway.config import Settings
from gateway.db import counts
from tests import stack as stack_module
from tests.conftest import make_settings
from workers.partitions import (
    PartitionMaintainer,
    PartitionWorker,
    advisory_key,
    ensure_partitions,
    format_report,
    format_status,
)


def utc(
    year: int, month: int, day: int = 1, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.fixture
async def scratch(db: asyncpg.Pool) -> AsyncIterator[str]:
    schema = f"pm_{uuid.uuid4().hex[:10]}"
    statements = [f"CREATE SCHEMA {schema}"]
    for table in ("payments", "webhook_events", "audit_log"):
        statements += [
            f"CREATE TABLE {schema}.{table} (LIKE payment_service.{table} INCLUDING ALL) "
            f"PARTITION BY RANGE ({KEYS[table]})",
            f"CREATE TABLE {schema}.{table}_default PARTITION OF {schema}.{table} DEFAULT",
        ]
    # What retention asks about before it retires a payments month.
    for table in ("payment_references", "pending_status_updates", "outbox", "payment_reviews",
                  "reconciliation_items"):  # fmt: skip
        statements.append(
            f"CREATE TABLE {schema}.{table} (LIKE payment_service.{table} INCLUDING ALL)"
        )
    await db.execute(";\n".join(statements))
    try:
        yield schema
    finally:
        await db.execute(f"DROP SCHEMA {schema} CASCADE")


KEYS = {"payments": "payment_date", "webhook_events": "received_at", "audit_log": "created_at"}


@pytest.fixture
def psettings(stack: stack_module.TestStack) -> Settings:
    return make_settings(
        stack,
        partition_retention_months=2,
        partition_premake_months=2,
        webhook_events_retention_months=1,
        audit_log_retention_months=3,
        reference_cache_ttl_days=90,
    )


def maintainer(
    pool: asyncpg.Pool, settings: Settings, schema: str, **kw: Any
) -> PartitionMaintainer:
    return PartitionMaintainer(pool, settings, schema=schema, **kw)


async def partitions(pool: asyncpg.Pool, schema: str, table: str) -> dict[str, str]:
    """Attached partitions of schema.table -> their bound expression."""
    rows = await pool.fetch(
        """
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = to_regclass($1)
        """,
        f"{schema}.{table}",
    )
    return {r["relname"]: r["bound"] for r in rows}


async def insert_payment(pool: asyncpg.Pool, schema: str, when: datetime) -> uuid.UUID:
    pid = uuid.uuid4()
    await pool.execute(
        f"""
        INSERT INTO {schema}.payments
            (id, reference_number, loan_account_number, cif, amount, payment_date, source)
        VALUES ($1, $2, 'LA1', 'CIF1', $3, $4, 'webhook')
        """,
        pid,
        f"ref-{pid.hex}",
        Decimal("10.50"),
        when.replace(tzinfo=None),
    )
    return pid


async def home(pool: asyncpg.Pool, schema: str, pid: uuid.UUID) -> str:
    name: str = await pool.fetchval(
        f"SELECT tableoid::regclass::text FROM {schema}.payments WHERE id = $1", pid
    )
    return name.split(".")[-1]


def months(table: str, *suffixes: str) -> set[str]:
    return {f"{table}_{s}" for s in suffixes}


async def test_fresh_schema_gets_every_month_of_the_window(
    db: asyncpg.Pool, scratch: str, psettings: Settings
) -> None:
    report = await maintainer(db, psettings, scratch).maintain(now=utc(2026, 11, 15, 12))
    assert report.result == "ok"
    payments = await partitions(db, scratch, "payments")
    assert set(payments) == {"payments_default"} | months(
        "payments", "2026_09", "2026_10", "2026_11", "2026_12", "2027_01"
    )
    assert payments["payments_2026_11"] == (
        "FOR VALUES FROM ('2026-11-01 00:00:00') TO ('2026-12-01 00:00:00')"
    )
    events = await partitions(db, scratch, "webhook_events")
    assert set(events) == {"webhook_events_default"} | months(
        "webhook_events", "2026_10", "2026_11", "2026_12", "2027_01"
    )
    assert events["webhook_events_2026_12"] == (
        "FOR VALUES FROM ('2026-12-01 00:00:00+00') TO ('2027-01-01 00:00:00+00')"
    )
    audit = await partitions(db, scratch, "audit_log")
    assert "audit_log_2026_08" in audit and "audit_log_2027_01" in audit and len(audit) == 7
    # The new partitions carry the parent's indexes (attached, not bare tables).
    index_count = await db.fetchval(
        "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND tablename = 'payments_2026_11'",
        scratch,
    )
    assert index_count >= 5

    again = await maintainer(db, psettings, scratch).maintain(now=utc(2026, 11, 20))
    assert again.result == "ok" and again.created == [] and again.detached == []


async def test_year_boundary_premakes_into_next_year(
    db: asyncpg.Pool, scratch: str, psettings: Settings
) -> None:
    await maintainer(db, psettings, scratch).maintain(now=utc(2026, 12, 31, 23, 59, 59))
    payments = await partitions(db, scratch, "payments")
    assert payments["payments_2027_01"] == (
        "FOR VALUES FROM ('2027-01-01 00:00:00') TO ('2027-02-01 00:00:00')"
    )
    assert "payments_2027_02" in payments and "payments_2027_03" not in payments
    last_second = await insert_payment(db, scratch, datetime(2026, 12, 31, 23, 59, 59, 999999))
    first_second = await insert_payment(db, scratch, datetime(2027, 1, 1))
    assert await home(db, scratch, last_second) == "payments_2026_12"
    assert await home(db, scratch, first_second) == "payments_2027_01"


async def test_leap_february(db: asyncpg.Pool, scratch: str, psettings: Settings) -> None:
    await maintainer(db, psettings, scratch).maintain(now=utc(2028, 2, 29, 12))
    payments = await partitions(db, scratch, "payments")
    assert payments["payments_2028_02"] == (
        "FOR VALUES FROM ('2028-02-01 00:00:00') TO ('2028-03-01 00:00:00')"
    )
    leap_day = await insert_payment(db, scratch, datetime(2028, 2, 29, 23, 59, 59))
    march = await insert_payment(db, scratch, datetime(2028, 3, 1))
    assert await home(db, scratch, leap_day) == "payments_2028_02"
    assert await home(db, scratch, march) == "payments_2028_03"


async def test_premake_after_a_long_outage_creates_every_missing_month_and_moves_rows(
    db: asyncpg.Pool, scratch: str, psettings: Settings
) -> None:
    await maintainer(db, psettings, scratch).maintain(now=utc(2026, 1, 10))
    # Seven months without maintenance: payments after March landed in DEFAULT.
    stranded = {m: await insert_payment(db, scratch, datetime(2026, m, 15)) for m in range(4, 11)}
    report = await maintainer(db, psettings, scratch).maintain(now=utc(2026, 8, 10))
    assert report.result == "ok"
    assert report.created == [f"payments_2026_{m:02d}" for m in range(6, 11)] + [
        f"webhook_events_2026_{m:02d}" for m in range(7, 11)
    ] + [f"audit_log_2026_{m:02d}" for m in range(5, 11)]
    payments = await partitions(db, scratch, "payments")
    assert set(payments) == {"payments_default"} | months(
        "payments", "2026_06", "2026_07", "2026_08", "2026_09", "2026_10"
    )
    for m, pid in stranded.items():
        assert await home(db, scratch, pid) == (
            f"payments_2026_{m:02d}" if m >= 6 else "payments_default"
        )
    assert report.default_rows["payments"] == 2  # April and May: before retention start
    assert sorted(report.detached) == sorted(
        [f"payments_{s}" for s in ("2025_11", "2025_12", "2026_01", "2026_02", "2026_03")]
        + [f"webhook_events_{s}" for s in ("2025_12", "2026_01", "2026_02", "2026_03")]
        + [f"audit_log_{s}" for s in ("2025_10", "2025_11", "2025_12", "2026_01", "2026_02",
                                      "2026_03")]
    )  # fmt: skip


async def test_rows_move_out_of_default_while_inserts_keep_arriving(
    db: asyncpg.Pool, stack: stack_module.TestStack, scratch: str, psettings: Settings
) -> None:
    m = maintainer(db, psettings, scratch)
    await m.maintain(now=utc(2026, 11, 15))
    target = datetime(2027, 3, 1)  # beyond premake: lands in DEFAULT for now
    inserted: list[uuid.UUID] = []
    for i in range(200):
        inserted.append(await insert_payment(db, scratch, target + timedelta(minutes=i)))

    writers = await asyncpg.create_pool(stack.database_url, min_size=3, max_size=3)
    done = asyncio.Event()
    after_done = 0

    async def keep_inserting(offset: int) -> None:
        # No retry: an insert that fails while rows move is a failed test.
        nonlocal after_done
        i = 0
        while after_done < 30:
            when = target + timedelta(days=offset, seconds=i)
            inserted.append(await insert_payment(writers, scratch, when))
            i += 1
            if done.is_set():
                after_done += 1

    tasks = [asyncio.create_task(keep_inserting(n)) for n in range(3)]
    try:
        await asyncio.sleep(0)  # let the writers start before maintenance
        report = await m.maintain(now=utc(2027, 1, 15))
        done.set()
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await writers.close()

    assert report.result == "ok"
    assert "payments_2027_03" in report.created
    assert report.moved_rows["payments_2027_03"] >= 200
    lo, hi = datetime(2027, 3, 1), datetime(2027, 4, 1)
    total, distinct = await db.fetchrow(
        f"SELECT count(*), count(DISTINCT id) FROM {scratch}.payments "
        "WHERE payment_date >= $1 AND payment_date < $2",
        lo,
        hi,
    )
    assert total == distinct == len(inserted) == len(set(inserted))
    stored = {r["id"] for r in await db.fetch(f"SELECT id FROM {scratch}.payments")}
    assert stored == set(inserted)
    in_default = await db.fetchval(
        f"SELECT count(*) FROM {scratch}.payments_default "
        "WHERE payment_date >= $1 AND payment_date < $2",
        lo,
        hi,
    )
    assert in_default == 0


async def test_retention_detaches_and_keeps_the_data(
    db: asyncpg.Pool, scratch: str, psettings: Settings
) -> None:
    await maintainer(db, psettings, scratch).maintain(now=utc(2026, 11, 15))
    old = await insert_payment(db, scratch, datetime(2026, 9, 3))
    outlier = await insert_payment(db, scratch, datetime(2019, 1, 1))  # stays in DEFAULT
    report = await maintainer(db, psettings, scratch).maintain(now=utc(2026, 12, 2))
    assert "payments_2026_09" in report.detached
    payments = await partitions(db, scratch, "payments")
    assert "payments_2026_09" not in payments and "payments_default" in payments
    kept = await db.fetchval(
        f"SELECT count(*) FROM {scratch}.payments_2026_09_detached WHERE id = $1", old
    )
    assert kept == 1
    assert await db.fetchval(f"SELECT count(*) FROM {scratch}.payments WHERE id = $1", old) == 0
    assert await home(db, scratch, outlier) == "payments_default"
    again = await maintainer(db, psettings, scratch).maintain(now=utc(2026, 12, 2))
    assert again.detached == [] and again.conflicts == []


async def test_retention_drop(db: asyncpg.Pool, scratch: str, psettings: Settings) -> None:
    dropping = psettings.replace(partition_retention_action="drop")
    await maintainer(db, dropping, scratch).maintain(now=utc(2026, 11, 15))
    await insert_payment(db, scratch, datetime(2026, 9, 3))
    report = await maintainer(db, dropping, scratch).maintain(now=utc(2026, 12, 2))
    assert "payments_2026_09" in report.dropped and report.detached == []
    for name in ("payments_2026_09", "payments_2026_09_detached"):
        assert await db.fetchval("SELECT to_regclass($1)", f"{scratch}.{name}") is None
    assert "payments_default" in await partitions(db, scratch, "payments")


async def test_retention_waits_for_what_depends_on_a_month_and_reports_it(
    db: asyncpg.Pool, scratch: str, psettings: Settings
) -> None:
    """Issue 33.4: a month was retired with pending payments, parked updates, unpublished
    events and open exceptions in it, and the parked updates were later deleted without a
    trace. Now the month is held (reported, counted) until nothing depends on it; forced,
    it is retired and its parked updates go to the operators' queue."""
    await maintainer(db, psettings, scratch).maintain(now=utc(2026, 11, 15))
    day = datetime(2026, 9, 3)
    pending, parked, queued, reviewed = [await insert_payment(db, scratch, day) for _ in range(4)]
    await db.execute(f"UPDATE {scratch}.payments SET status = 'pending' WHERE id = $1", pending)
    await db.execute(
        f"INSERT INTO {scratch}.pending_status_updates (reference_number, status, channel) "
        "VALUES ($1, 'refunded', 'generic')",
        f"ref-{parked.hex}",
    )
    await db.execute(
        f"INSERT INTO {scratch}.outbox (event_id, event_type, topic, key, payment_id, "
        "payment_date, status) VALUES (gen_random_uuid(), 'payment.recorded', 't', 'k', $1, $2, "
        "'succeeded')",
        queued,
        day,
    )
    await db.execute(
        f"INSERT INTO {scratch}.payment_reviews (reference_number, payment_id, source, reason) "
        "VALUES ($1, $2, 'status_poll', 'not_found')",
        f"ref-{reviewed.hex}",
        reviewed,
    )
    later = utc(2026, 12, 2)
    report = await maintainer(db, psettings, scratch).maintain(now=later)
    every = {"pending_payments": 1, "parked_updates": 1, "unpublished_events": 1,
             "open_exceptions": 1}  # fmt: skip
    assert (report.result, report.held) == ("held", {"payments_2026_09": every})
    assert "payments_2026_09" in await partitions(db, scratch, "payments")
    assert "webhook_events_2026_10" in report.detached  # other tables retire as before
    held = REGISTRY.get_sample_value("paygate_partition_retention_held", {"kind": "months"})
    assert held == 1
    [info] = [i for i in await maintainer(db, psettings, scratch).status(later)
              if i.name == "payments_2026_09"]  # fmt: skip
    assert info.action == (
        "held: 1 pending payment, 1 parked update, 1 unpublished event, 1 open exception"
    )

    forced = await maintainer(db, psettings, scratch, force=True).maintain(now=later)
    assert forced.result == "ok" and "payments_2026_09" in forced.detached
    assert forced.retired_with_dependents == {"payments_2026_09": every}
    assert await db.fetchval(f"SELECT count(*) FROM {scratch}.pending_status_updates") == 0
    review = await db.fetchrow(
        f"SELECT payment_id, source, provider_status FROM {scratch}.payment_reviews "
        "WHERE reason = 'payment_retired'"
    )
    assert review is not None and tuple(review.values()) == (parked, "retention", "refunded")
    audited = await db.fetchval(
        f"SELECT count(*) FROM {scratch}.audit_log WHERE action = 'status_for_retired_payment'"
    )
    assert audited == 1


async def test_two_maintainers_at_once(
    db: asyncpg.Pool, stack: stack_module.TestStack, scratch: str, psettings: Settings
) -> None:
    other = await asyncpg.connect(stack.database_url)
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", advisory_key(scratch))
        skipped = await maintainer(db, psettings, scratch).maintain(now=utc(2026, 11, 15))
        assert skipped.skipped and skipped.created == []
        assert set(await partitions(db, scratch, "payments")) == {"payments_default"}
    finally:
        await other.close()  # the lock goes with the session

    first, second = await asyncio.gather(
        maintainer(db, psettings, scratch).maintain(now=utc(2026, 11, 15)),
        maintainer(db, psettings, scratch).maintain(now=utc(2026, 11, 15)),
    )
    assert {first.result, second.result} <= {"ok", "skipped"}
    assert sorted(first.created + second.created) == sorted(set(first.created + second.created))
    assert len(first.created + second.created) == 5 + 4 + 6
    # The lock was given back: a third run takes it and finds nothing to do.
    third = await maintainer(db, psettings, scratch).maintain(now=utc(2026, 11, 15))
    assert third.result == "ok" and third.created == []


async def test_a_busy_default_partition_defers_to_the_next_run(
    db: asyncpg.Pool, stack: stack_module.TestStack, scratch: str, psettings: Settings
) -> None:
    await maintainer(db, psettings, scratch).maintain(now=utc(2026, 11, 15))
    reader = await asyncpg.connect(stack.database_url)
    try:
        tx = reader.transaction()
        await tx.start()
        await reader.execute(f"LOCK TABLE {scratch}.payments_default IN ACCESS SHARE MODE")
        m = maintainer(db, psettings, scratch, lock_timeout="100ms")
        report = await m.maintain(now=utc(2026, 12, 15))
        assert report.result == "partial"
        assert "payments_2027_02" in report.deferred
        assert "payments_2027_02" not in await partitions(db, scratch, "payments")
        assert "webhook_events_2027_02" in report.created  # other tables carried on
        await tx.rollback()
    finally:
        await reader.close()
    report = await maintainer(db, psettings, scratch).maintain(now=utc(2026, 12, 15))
    assert report.result == "ok" and "payments_2027_02" in report.created


async def test_references_are_pruned_in_batches(
    db: asyncpg.Pool, scratch: str, psettings: Settings
) -> None:
    now = utc(2026, 11, 15)
    rows = [
        (f"old-{i}", uuid.uuid4(), datetime(2026, 1, 1), b"h", now - timedelta(days=91 + i))
        for i in range(12)
    ] + [
        (f"new-{i}", uuid.uuid4(), datetime(2026, 1, 1), b"h", now - timedelta(days=89))
        for i in range(3)
    ]
    await db.copy_records_to_table(
        "payment_references",
        schema_name=scratch,
        records=rows,
        columns=["reference_number", "payment_id", "payment_date", "payload_hash", "created_at"],
    )
    report = await maintainer(db, psettings, scratch, prune_batch_size=5).maintain(now=now)
    assert report.references_pruned == 12
    assert report.prune_batches == 3  # 5 + 5 + 2
    left = await db.fetch(f"SELECT reference_number FROM {scratch}.payment_references")
    assert sorted(r["reference_number"] for r in left) == ["new-0", "new-1", "new-2"]


async def test_status_shows_partitions_rows_and_the_plan(
    db: asyncpg.Pool, scratch: str, psettings: Settings
) -> None:
    m = maintainer(db, psettings, scratch)
    await m.maintain(now=utc(2026, 11, 15))
    await insert_payment(db, scratch, datetime(2026, 11, 2))
    await insert_payment(db, scratch, datetime(2026, 11, 3))
    await insert_payment(db, scratch, datetime(2030, 1, 1))  # DEFAULT
    infos = await m.status(now=utc(2026, 12, 15))
    by_name = {i.name: i for i in infos}
    assert by_name["payments_2026_11"].rows == 2 and by_name["payments_2026_11"].exact
    assert by_name["payments_2026_11"].action == "keep"
    assert by_name["payments_2026_09"].action == "detach"
    assert by_name["payments_2027_02"].action == "create"
    assert by_name["payments_default"].rows == 1 and by_name["payments_default"].action == "default"
    text = format_status(infos)
    assert text.splitlines()[0].split() == ["TABLE", "PARTITION", "FROM", "TO", "ROWS", "ACTION"]
    line = next(ln for ln in text.splitlines() if "payments_2026_11" in ln)
    assert line.split() == ["payments", "payments_2026_11", "2026-11-01", "2026-12-01", "2", "keep"]
    # status changes nothing.
    assert "payments_2027_02" not in await partitions(db, scratch, "payments")


async def test_worker_runs_maintenance_and_reports_default_rows(
    db: asyncpg.Pool, scratch: str, psettings: Settings
) -> None:
    await ensure_partitions(db, psettings, now=datetime.now(UTC), schema=scratch)
    await insert_payment(db, scratch, datetime(2001, 1, 1))
    worker = PartitionWorker(db, psettings)
    worker.maintainer.schema = scratch
    before = (
        REGISTRY.get_sample_value("paygate_partition_maintenance_runs_total", {"result": "ok"})
        or 0.0
    )
    assert await worker.run_once() is False
    assert worker.last_report is not None and worker.last_report.result == "ok"
    assert worker.last_report.default_rows["payments"] == 1
    after = REGISTRY.get_sample_value("paygate_partition_maintenance_runs_total", {"result": "ok"})
    assert after == before + 1
    assert worker.name == "partitions"
    assert worker.interval == psettings.partition_maintenance_interval_seconds


async def test_ensure_partitions_creates_but_never_retires(
    db: asyncpg.Pool, scratch: str, psettings: Settings
) -> None:
    await ensure_partitions(db, psettings, now=utc(2026, 11, 15), schema=scratch)
    report = await ensure_partitions(db, psettings, now=utc(2027, 6, 15), schema=scratch)
    assert report.detached == [] and report.dropped == [] and report.references_pruned == 0
    payments = await partitions(db, scratch, "payments")
    assert "payments_2026_09" in payments and "payments_2027_08" in payments


async def test_ensure_partitions_waits_for_a_run_in_progress(
    db: asyncpg.Pool, stack: stack_module.TestStack, scratch: str, psettings: Settings
) -> None:
    other = await asyncpg.connect(stack.database_url)
    try:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", advisory_key(scratch))
        waiting = asyncio.create_task(
            ensure_partitions(db, psettings, now=utc(2026, 11, 15), schema=scratch)
        )
    finally:
        await other.close()
    report = await waiting
    assert report.result == "ok" and "payments_2026_11" in report.created


async def test_default_partition_rows_counts_each_table(
    db: asyncpg.Pool, scratch: str, psettings: Settings
) -> None:
    await insert_payment(db, scratch, datetime(2001, 1, 1))
    await db.execute(
        f"INSERT INTO {scratch}.audit_log (created_at, actor, action) VALUES ($1, 'test', 'x')",
        utc(2001, 1, 1),
    )
    rows = await counts.default_partition_rows(db, scratch)
    assert rows == {"payments": 1, "webhook_events": 0, "audit_log": 1}


async def installed_at(db: asyncpg.Pool, schema: str, when: datetime) -> None:
    """Give the scratch schema the record of its first migration, as `paygate migrate`
    keeps it in payment_service."""
    await db.execute(
        f"CREATE TABLE {schema}.schema_migrations (LIKE payment_service.schema_migrations "
        f"INCLUDING ALL); INSERT INTO {schema}.schema_migrations (version, checksum, applied_at) "
        f"VALUES ('001_schema', 'x', '{when.isoformat()}'), ('002_x', 'y', now())"
    )


async def test_server_stamped_tables_start_at_the_install_month(
    db: asyncpg.Pool, scratch: str, psettings: Settings
) -> None:
    """audit_log and webhook_events rows carry the server's clock: nothing is older than
    the install, so no partition is made before it. payments keeps its retention window
    (a provider's payment_date may be that old on the first day)."""
    await installed_at(db, scratch, utc(2026, 11, 3, 9))
    m = maintainer(db, psettings, scratch)
    report = await m.maintain(now=utc(2026, 11, 15, 12))
    assert report.result == "ok"
    assert set(await partitions(db, scratch, "audit_log")) == {"audit_log_default"} | months(
        "audit_log", "2026_11", "2026_12", "2027_01"
    )
    assert set(await partitions(db, scratch, "webhook_events")) == {
        "webhook_events_default"
    } | months("webhook_events", "2026_11", "2026_12", "2027_01")
    assert "payments_2026_09" in await partitions(db, scratch, "payments")
    # status plans nothing before the install either.
    infos = await m.status(now=utc(2027, 1, 15))
    audit = sorted(i.name for i in infos if i.table == "audit_log" and i.lower is not None)
    assert audit[0] == "audit_log_2026_11", audit


async def test_maintain_reports_what_it_did_as_text(
    db: asyncpg.Pool, scratch: str, psettings: Settings
) -> None:
    m = maintainer(db, psettings, scratch)
    await m.maintain(now=utc(2026, 11, 15))
    await insert_payment(db, scratch, datetime(2027, 3, 2))  # beyond premake: DEFAULT
    text = format_report(await m.maintain(now=utc(2027, 1, 15)))
    lines = text.splitlines()
    assert lines[0] == "partition maintenance: ok"
    created = next(line for line in lines if line.split()[0] == "created")
    assert "payments_2027_03" in created and "audit_log_2027_03" in created
    assert any(re.fullmatch(r"\s*moved\s+1\s+rows from DEFAULT into payments_2027_03", line)
               for line in lines), text  # fmt: skip
    assert any(line.split()[0] == "detached" and "payments_2026_09" in line for line in lines)
    assert format_report(await m.maintain(now=utc(2027, 1, 15))).splitlines() == [
        "partition maintenance: ok",
        "  nothing to do: every partition is in place",
    ]
