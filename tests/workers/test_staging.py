"""Staging ingestion against real Postgres: mixed batches, crashes mid-batch, failures
past the retry budget, a row the database refuses, and two workers sharing a backlog.
Rule-by-rule parity of the SQL classification with gateway.domain.validation lives in
test_staging_sql_parity.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from unittest.mock import ANY

import asyncpg
import orjson
import pytest
from prometheus_client import REGISTRY

from gateway.config import Settings
from gateway.db import counts
from gateway.db.server import ServerFunctions
from gateway.notify import Wakeup
from tests.conftest import make_settings
from tests.events import QUEUED, queued_count
from tests.webhooks import payment_doc, post_webhook
from workers import staging_sql
from workers.staging import BatchFailed, BatchReport, Recorded, StagingWorker
from workers.staging_sql import Rule

COLUMNS = (
    "reference_number", "loan_account_number", "cif", "amount", "payment_date",
    "payment_channel", "metadata",
)  # fmt: skip
TODAY = datetime.now(UTC).replace(tzinfo=None, hour=12, minute=0, second=0, microsecond=0)
DAY = TODAY - timedelta(days=3)


def row(ref: str, **changes: Any) -> tuple[Any, ...]:
    values: dict[str, Any] = {
        "reference_number": ref,
        "loan_account_number": "LA-0001",
        "cif": "CIF-0001",
        "amount": Decimal("125.50"),
        "payment_date": DAY,
        "payment_channel": "bank_transfer",
        "metadata": None,
    }
    values.update(changes)
    return tuple(values[c] for c in COLUMNS)


async def load(db: asyncpg.Pool, rows: Sequence[tuple[Any, ...]]) -> list[int]:
    """Stage rows as the ETL would; returns their ids in order."""
    columns = list(zip(*rows, strict=True))
    found = await db.fetch(
        """
        INSERT INTO payment_service.payment_staging
            (reference_number, loan_account_number, cif, amount, payment_date,
             payment_channel, metadata)
        SELECT r, a, c, m, d, ch, md
        FROM unnest($1::text[], $2::text[], $3::text[], $4::numeric[], $5::timestamp[],
                    $6::text[], $7::jsonb[]) WITH ORDINALITY AS t(r, a, c, m, d, ch, md, n)
        ORDER BY n
        RETURNING id
        """,
        *columns,
    )
    return sorted(r["id"] for r in found)


async def staged(db: asyncpg.Pool) -> dict[int, asyncpg.Record]:
    rows = await db.fetch("SELECT * FROM payment_service.payment_staging ORDER BY id")
    return {r["id"]: r for r in rows}


def sample(result: str) -> float:
    value = REGISTRY.get_sample_value("paygate_staging_rows_total", {"result": result})
    return value or 0.0


def staging_settings(stack: Any, **overrides: Any) -> Settings:
    return make_settings(stack, **{"staging_max_retries": 3, **overrides})


# -- a mixed batch ------------------------------------------------------------------


async def test_mixed_batch_records_new_rows_and_marks_every_row(
    make_client: Any, db: asyncpg.Pool, stack: Any
) -> None:
    settings = staging_settings(stack)
    client = await make_client(settings)
    iso = DAY.strftime("%Y-%m-%dT%H:%M:%SZ")
    hook_same = payment_doc("WH-SAME", payment_date=iso, metadata=None)
    hook_other = payment_doc("WH-OTHER", payment_date=iso, metadata=None)
    webhook_ids = {}
    for doc in (hook_same, hook_other):
        status, body, _ = await post_webhook(client, doc)
        assert status == 201
        webhook_ids[doc["reference_number"]] = body["payment_id"]

    too_old = datetime(2001, 1, 1)
    ids = await load(
        db,
        [
            row("NEW-1"),
            row("WH-SAME"),  # same payment the webhook recorded
            row("WH-OTHER", amount=Decimal("999.00")),  # conflicts with the webhook's
            row("NEW-2", amount=Decimal("10.00")),
            row("NEW-2", amount=Decimal("10.00"), metadata={"again": True}),  # in-batch dup
            row("NEW-2", amount=Decimal("11.00")),  # in-batch conflict
            row("BAD-ZERO", amount=Decimal("0")),
            row("BAD-NEG", amount=Decimal("-5.00")),
            row("BAD-OLD", payment_date=too_old),
            row("BAD-EMPTY", cif=""),
            row("BAD-CTRL", loan_account_number="LA\x01"),
            row("NEW-3", payment_channel="branch", metadata={"batch": "b1"}),
            row("BAD-FUTURE", payment_date=TODAY + timedelta(days=400)),
            row("LATE-LEADER", amount=Decimal("0")),  # invalid first copy...
            row("LATE-LEADER", amount=Decimal("7.25")),  # ...so this one leads
        ],
    )
    before = {r: sample(r) for r in ("processed", "duplicate", "error")}
    wake = Wakeup()
    worker = StagingWorker(db, settings, wake)

    assert await worker.burst() == 1

    payments = {
        r["reference_number"]: r
        for r in await db.fetch("SELECT * FROM payment_service.payments WHERE source = 'staging'")
    }
    assert set(payments) == {"NEW-1", "NEW-2", "NEW-3", "LATE-LEADER"}
    assert payments["NEW-2"]["amount"] == Decimal("10.00")
    assert payments["LATE-LEADER"]["amount"] == Decimal("7.25")
    assert payments["NEW-3"]["metadata"] == {"batch": "b1"}
    assert payments["NEW-3"]["payment_channel"] == "branch"
    assert payments["NEW-1"]["payment_date"] == DAY
    assert await db.fetchval("SELECT count(*) FROM payment_service.payments") == 6

    events = {
        r["key"]: orjson.loads(r["payload"])
        for r in await db.fetch(
            f"SELECT key, payload FROM {QUEUED} e WHERE topic = $1 AND key <> ALL($2::text[])",
            settings.kafka_topic,
            list(webhook_ids),
        )
    }
    assert set(events) == set(payments)
    for ref, event in events.items():
        assert event["event_type"] == "payment.recorded"
        assert event["payment"]["id"] == str(payments[ref]["id"])
        assert event["payment"]["source"] == "staging"
        assert event["payment"]["amount"] == str(payments[ref]["amount"])
    assert await queued_count(db) == 6

    rows = await staged(db)
    assert all(r["processed"] and r["processed_at"] is not None for r in rows.values())
    got = {i: (rows[i]["result"], rows[i]["error"]) for i in ids}
    pid = {i: rows[i]["payment_id"] for i in ids}
    new1, same, other, n2, n2dup, n2conf, zero, neg, old, empty, ctrl, n3, fut, l1, l2 = ids
    assert got == {
        new1: ("recorded", None),
        same: ("duplicate", None),
        other: ("conflict", "reference_number: differs from the recorded payment"),
        n2: ("recorded", None),
        n2dup: ("duplicate", None),
        n2conf: ("conflict", "reference_number: differs from an earlier row of this batch"),
        zero: ("error", "amount: must be greater than zero"),
        neg: ("error", "amount: must be greater than zero"),
        old: ("error", got[old][1]),
        empty: ("error", "cif: must not be empty"),
        ctrl: ("error", "loan_account_number: contains control or invalid characters"),
        n3: ("recorded", None),
        fut: ("error", got[fut][1]),
        l1: ("error", "amount: must be greater than zero"),
        l2: ("recorded", None),
    }
    # Both name the limit they crossed (the oldest date accepted, the days allowed ahead).
    assert got[old][1].startswith("payment_date: too old: the oldest date accepted is 20")
    assert got[fut][1].startswith("payment_date: too far in the future: 31 days ahead, the")
    assert pid[new1] == payments["NEW-1"]["id"]
    assert str(pid[same]) == webhook_ids["WH-SAME"]
    assert str(pid[other]) == webhook_ids["WH-OTHER"]
    assert pid[n2] == pid[n2dup] == pid[n2conf] == payments["NEW-2"]["id"]
    assert pid[l2] == payments["LATE-LEADER"]["id"]
    assert all(pid[i] is None for i in (zero, neg, old, empty, ctrl, fut, l1))

    log = await db.fetch("SELECT * FROM payment_service.staging_process_log")
    assert len(log) == 1
    entry = log[0]
    assert (entry["batch_start_id"], entry["batch_end_id"]) == (ids[0], ids[-1])
    assert (entry["total_records"], entry["processed_records"]) == (15, 4)
    assert (entry["duplicate_records"], entry["error_records"]) == (2, 9)
    assert (entry["status"], entry["attempt"]) == ("completed", 1)
    assert entry["completed_at"] is not None and entry["duration_ms"] > 0
    details = entry["error_details"]
    assert (details["total"], details["conflicts"], details["truncated"]) == (9, 2, False)
    assert {(d["id"], d["field"]) for d in details["items"]} == {
        (other, "reference_number"), (n2conf, "reference_number"), (zero, "amount"),
        (neg, "amount"), (old, "payment_date"), (empty, "cif"),
        (ctrl, "loan_account_number"), (fut, "payment_date"), (l1, "amount"),
    }  # fmt: skip

    conflicts = await db.fetch(
        "SELECT reference_number, payment_id FROM payment_service.audit_log "
        "WHERE action = 'conflict' AND actor = 'staging' ORDER BY reference_number"
    )
    assert [(r["reference_number"], r["payment_id"]) for r in conflicts] == [
        ("NEW-2", payments["NEW-2"]["id"]),
        ("WH-OTHER", pid[other]),
    ]
    assert sample("processed") - before["processed"] == 4
    assert sample("duplicate") - before["duplicate"] == 2
    assert sample("error") - before["error"] == 9
    assert await wake.wait(1.0)  # the relay is told there is something to publish

    # Nothing left: a second run claims nothing and logs nothing.
    assert await worker.run_once() is False
    assert await db.fetchval("SELECT count(*) FROM payment_service.staging_process_log") == 1


async def test_rows_already_recorded_by_staging_are_duplicates_next_time(
    db: asyncpg.Pool, stack: Any
) -> None:
    settings = staging_settings(stack)
    worker = StagingWorker(db, settings, Wakeup())
    await load(db, [row("AGAIN-1"), row("AGAIN-2")])
    await worker.burst()
    ids = await load(db, [row("AGAIN-1"), row("AGAIN-2", amount=Decimal("1.00"))])
    await worker.burst()

    rows = await staged(db)
    assert [rows[i]["result"] for i in ids] == ["duplicate", "conflict"]
    assert await db.fetchval("SELECT count(*) FROM payment_service.payments") == 2
    assert await queued_count(db) == 2


async def test_full_batches_report_more_work_and_the_backlog_drains(
    db: asyncpg.Pool, stack: Any
) -> None:
    settings = staging_settings(stack, staging_batch_size=100)
    worker = StagingWorker(db, settings, Wakeup())
    await load(db, [row(f"FULL-{i:04d}") for i in range(250)])

    assert await worker.run_once() is True
    assert await worker.burst() == 2  # a full batch (more), then a short one (done)
    assert await db.fetchval("SELECT count(*) FROM payment_service.payments") == 250
    assert await counts.staging_state(db, timeout=5) == (0, ANY)
    log = await db.fetch(
        "SELECT batch_start_id, batch_end_id, total_records FROM "
        "payment_service.staging_process_log ORDER BY batch_start_id"
    )
    assert [r["total_records"] for r in log] == [100, 100, 50]


async def test_payment_and_event_ids_are_distinct_time_ordered_uuids(
    db: asyncpg.Pool, stack: Any
) -> None:
    settings = staging_settings(stack, staging_batch_size=100)
    await load(db, [row(f"IDS-{i:04d}") for i in range(250)])
    await StagingWorker(db, settings, Wakeup()).burst()
    rows = await db.fetch(
        "SELECT s.id AS staging_id, p.id, o.event_id FROM payment_service.payment_staging s"
        " JOIN payment_service.payments p ON p.id = s.payment_id"
        f" JOIN {QUEUED} o ON o.key = s.reference_number ORDER BY s.id"
    )
    assert len(rows) == 250
    ids = [r["id"] for r in rows]
    events = [r["event_id"] for r in rows]
    assert len(set(ids)) == 250 and len(set(events)) == 250 and not set(ids) & set(events)
    # v7 on every server (uuidv7() on 18, assembled before): batch after batch they grow
    assert {i.version for i in ids} == {7}
    firsts = [ids[0], ids[100], ids[200]]
    assert [i.bytes[:6] for i in firsts] == sorted(i.bytes[:6] for i in firsts)
    assert {e.version for e in events} == {8}
    assert all(i.variant == uuid.RFC_4122 for i in ids + events)


# -- failures -----------------------------------------------------------------------


class CrashOnce(StagingWorker):
    """Fault injection: the first time a batch is about to be recorded, its database
    session is terminated from another connection, as a lost connection would."""

    retry_base_delay = 0.01
    crashed = False

    async def _record(self, conn: asyncpg.Connection, ids: list[int]) -> Recorded:
        if not self.crashed:
            self.crashed = True
            await self.pool.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
        return await super()._record(conn, ids)


async def test_a_batch_whose_connection_dies_is_retried_and_recorded_once(
    db: asyncpg.Pool, stack: Any
) -> None:
    settings = staging_settings(stack, staging_batch_size=1000)
    ids = await load(db, [row(f"CRASH-{i:05d}") for i in range(2500)])
    worker = CrashOnce(db, settings, Wakeup())

    await worker.burst()

    assert worker.crashed
    assert (
        await db.fetchval("SELECT count(DISTINCT reference_number) FROM payment_service.payments")
        == await db.fetchval("SELECT count(*) FROM payment_service.payments")
        == 2500
    )
    assert await queued_count(db) == 2500
    rows = await staged(db)
    assert {r["result"] for r in rows.values()} == {"recorded"}
    log = await db.fetch(
        "SELECT * FROM payment_service.staging_process_log ORDER BY batch_start_id"
    )
    assert [(r["status"], r["attempt"], r["total_records"]) for r in log] == [
        ("completed", 2, 1000), ("completed", 1, 1000), ("completed", 1, 500),
    ]  # fmt: skip
    assert log[0]["batch_start_id"] == ids[0] and log[-1]["batch_end_id"] == ids[-1]


class AckLostOnce(StagingWorker):
    """Fault injection: the first batch commits, then the worker hears of a failure (as
    when the connection drops while COMMIT's answer is on its way) and retries."""

    retry_base_delay = 0.01
    lost = False

    async def _attempt(self, attempt: int, started: float) -> BatchReport:
        report = await super()._attempt(attempt, started)
        if not self.lost:
            self.lost = True
            raise BatchFailed(ConnectionResetError(), [])
        return report


async def test_a_committed_batch_whose_answer_was_lost_is_not_recorded_twice(
    db: asyncpg.Pool, stack: Any
) -> None:
    settings = staging_settings(stack, staging_batch_size=1000)
    await load(db, [row(f"ACK-{i:05d}") for i in range(1500)])
    worker = AckLostOnce(db, settings, Wakeup())

    await worker.burst()

    assert worker.lost
    assert (
        await db.fetchval("SELECT count(DISTINCT reference_number) FROM payment_service.payments")
        == await db.fetchval("SELECT count(*) FROM payment_service.payments")
        == 1500
    )
    assert await queued_count(db) == 1500
    rows = await staged(db)
    assert {r["result"] for r in rows.values()} == {"recorded"}
    log = await db.fetch(
        "SELECT total_records, status FROM payment_service.staging_process_log "
        "ORDER BY batch_start_id"
    )
    assert [(r["total_records"], r["status"]) for r in log] == [
        (1000, "completed"), (500, "completed"),
    ]  # fmt: skip


class AlwaysDeadlocked(StagingWorker):
    retry_base_delay = 0.01
    attempts = 0

    async def _record(self, conn: asyncpg.Connection, ids: list[int]) -> Recorded:
        self.attempts += 1
        raise asyncpg.DeadlockDetectedError("deadlock detected (injected)")


async def test_a_batch_failing_past_its_retries_is_logged_and_left_queued(
    db: asyncpg.Pool, stack: Any
) -> None:
    settings = staging_settings(stack, staging_max_retries=2)
    ids = await load(db, [row(f"STUCK-{i}") for i in range(5)])
    failing = AlwaysDeadlocked(db, settings, Wakeup())

    assert await failing.run_once() is False

    assert failing.attempts == 3
    assert await db.fetchval("SELECT count(*) FROM payment_service.payments") == 0
    rows = await staged(db)
    assert all(not r["processed"] and r["result"] is None for r in rows.values())
    log = await db.fetchrow("SELECT * FROM payment_service.staging_process_log")
    assert (log["status"], log["attempt"], log["total_records"]) == ("failed", 3, 5)
    assert (log["batch_start_id"], log["batch_end_id"]) == (ids[0], ids[-1])
    assert log["error_details"] == {
        "error": "DeadlockDetectedError",
        "sqlstate": "40P01",
        "message": "deadlock detected (injected)",
    }

    await StagingWorker(db, settings, Wakeup()).burst()  # the next run picks them up
    assert await db.fetchval("SELECT count(*) FROM payment_service.payments") == 5


class MissingFunction(StagingWorker):
    """What a server without a function the batch uses does (PostgreSQL 15 had no
    pg_input_is_valid): every attempt fails with 42883."""

    retry_base_delay = 0.01

    def rules(self, server: ServerFunctions) -> tuple[Rule, ...]:
        missing = Rule("cif", "no_such_function(cif, 42) IS NULL", "'never'")
        return (*super().rules(server), missing)


async def test_a_failed_batch_says_which_function_is_missing(
    db: asyncpg.Pool, stack: Any, caplog: pytest.LogCaptureFixture
) -> None:
    await load(db, [row("NOFN-1", cif="CIF-SECRET-VALUE")])
    worker = MissingFunction(db, staging_settings(stack, staging_max_retries=1), Wakeup())
    assert await worker.run_once() is False
    log = await db.fetchrow("SELECT * FROM payment_service.staging_process_log")
    details = log["error_details"]
    assert (log["status"], details["error"], details["sqlstate"]) == (
        "failed", "UndefinedFunctionError", "42883"
    )  # fmt: skip
    assert details["message"].startswith("function no_such_function(")
    assert details["message"].endswith("does not exist")
    assert "argument types" in details["hint"]
    assert "no_such_function(" in caplog.text and "42883" in caplog.text
    assert "CIF-SECRET-VALUE" not in caplog.text + str(details)


class CorruptOne(StagingWorker):
    """Fault injection: the rules forget that an amount must be positive, so a zero
    amount passes classification and Postgres refuses it (payments' CHECK), as a row
    the rules let through would be; it must not sink its batch."""

    def rules(self, server: ServerFunctions) -> tuple[Rule, ...]:
        return tuple(r for r in super().rules(server) if "amount <= 0" not in r.condition)


async def test_a_row_the_database_refuses_becomes_an_error_and_the_rest_is_recorded(
    db: asyncpg.Pool, stack: Any
) -> None:
    settings = staging_settings(stack)
    zero = Decimal("0")
    ids = await load(
        db, [row("KEEP-1"), row("REFUSED", amount=zero), row("REFUSED", amount=zero), row("KEEP-2")]
    )

    await CorruptOne(db, settings, Wakeup()).burst()

    refs = await db.fetch("SELECT reference_number FROM payment_service.payments")
    assert sorted(r["reference_number"] for r in refs) == ["KEEP-1", "KEEP-2"]
    assert await db.fetchval("SELECT count(*) FROM payment_service.payment_references") == 2
    rows = await staged(db)
    assert [rows[i]["result"] for i in ids] == ["recorded", "error", "error", "recorded"]
    assert rows[ids[1]]["error"] == "row: rejected by the database (23514)"
    log = await db.fetchrow("SELECT * FROM payment_service.staging_process_log")
    assert (log["processed_records"], log["error_records"], log["status"]) == (2, 2, "completed")
    assert [(d["id"], d["field"]) for d in log["error_details"]["items"]] == [
        (ids[1], "row"), (ids[2], "row"),
    ]  # fmt: skip


# -- concurrency --------------------------------------------------------------------


async def test_two_workers_share_a_backlog_without_overlap(db: asyncpg.Pool, stack: Any) -> None:
    settings = staging_settings(stack, staging_batch_size=250)
    # 5,000 rows over 4,000 references: copies of one reference land in different batches.
    ids = await load(db, [row(f"PAR-{i % 4000:05d}") for i in range(5000)])
    w1 = StagingWorker(db, settings, Wakeup())
    w2 = StagingWorker(db, settings, Wakeup())

    await asyncio.gather(w1.burst(), w2.burst())

    assert (
        await db.fetchval("SELECT count(DISTINCT reference_number) FROM payment_service.payments")
        == await db.fetchval("SELECT count(*) FROM payment_service.payments")
        == 4000
    )
    assert await queued_count(db) == 4000
    rows = await staged(db)
    results = [rows[i]["result"] for i in ids]
    assert results.count("recorded") == 4000 and results.count("duplicate") == 1000
    log = await db.fetch(
        "SELECT * FROM payment_service.staging_process_log ORDER BY batch_start_id"
    )
    assert all(r["status"] == "completed" for r in log)
    # Every one of the 5,000 rows was claimed and the batches' sizes add up to exactly
    # 5,000: no row was in two batches. (Id *ranges* may interleave: SKIP LOCKED lets a
    # batch step over rows another worker holds, so min..max spans are not disjoint.)
    assert sum(r["total_records"] for r in log) == 5000
    assert sum(r["processed_records"] for r in log) == 4000
    claimed = {i for r in log for i in range(r["batch_start_id"], r["batch_end_id"] + 1)}
    assert set(ids) <= claimed


# -- error details ------------------------------------------------------------------


async def test_error_details_are_capped_but_counted(db: asyncpg.Pool, stack: Any) -> None:
    settings = staging_settings(stack)
    n = staging_sql.ERROR_DETAILS_MAX + 3
    ids = await load(db, [row("OK-1"), *(row(f"R{i:03d}", cif="") for i in range(n))])

    await StagingWorker(db, settings, Wakeup()).burst()

    log = await db.fetchrow("SELECT * FROM payment_service.staging_process_log")
    assert (log["total_records"], log["processed_records"], log["error_records"]) == (n + 1, 1, n)
    details = log["error_details"]
    assert (details["total"], details["conflicts"], details["truncated"]) == (n, 0, True)
    assert [d["id"] for d in details["items"]] == ids[1 : staging_sql.ERROR_DETAILS_MAX + 1]
    assert details["items"][0] == {
        "id": ids[1],
        "reference_number": "R000",
        "field": "cif",
        "detail": "must not be empty",
    }


async def test_a_clean_batch_logs_no_error_details(db: asyncpg.Pool, stack: Any) -> None:
    await load(db, [row("CLEAN-1"), row("CLEAN-2")])
    await StagingWorker(db, staging_settings(stack), Wakeup()).burst()
    log = await db.fetchrow("SELECT * FROM payment_service.staging_process_log")
    assert (log["processed_records"], log["error_details"]) == (2, None)
