"""Lean `payment.recorded` events (sql/060, and the event log of sql/170): the log holds
ids, payment_date and the status as recorded, and the relay builds the payload from
`payments` when it publishes.
The bytes on the topic must be exactly what the stored payload was before 060:
`recorded_events_before_060.json` holds payloads taken from main at 7fff14a for these
same payments (fixed ids), only the event's timestamp left as a placeholder."""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.clients.kafka import ensure_topic
from gateway.db.migrations import migrate
from gateway.db.payments import Candidate, record_batch
from gateway.db.pool import create_pool
from gateway.db.status import StatusEvent, apply_status
from gateway.domain.model import AMOUNT_MAX, Payment
from tests import stack as stack_module
from tests.workers.test_outbox import headers, read_topic, relay_settings, start_relay
from workers.outbox import OutboxRelay

GOLDEN = json.loads((Path(__file__).parent / "recorded_events_before_060.json").read_text())
DAY = datetime.fromisoformat(GOLDEN["payment_date"])
SQL_DIR = Path(__file__).parents[2] / "sql"
TIMESTAMP = re.compile(r'"timestamp" : "(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{6})?Z)"')


@pytest.fixture
async def relays() -> AsyncIterator[list[OutboxRelay]]:
    made: list[OutboxRelay] = []
    yield made
    for r in made:
        await r.stop(grace=5)


def _payment(ref: str, **changes: Any) -> Payment:
    fields: dict[str, Any] = {
        "reference_number": ref,
        "loan_account_number": "LA-1",
        "cif": "CIF-1",
        "amount": Decimal("10.50"),
        "payment_date": DAY,
        "payment_channel": "web",
    }
    fields.update(changes)
    return Payment(**fields)


# The payments the golden file was taken from, in its order (payment ids 0x0190...0, 1, ...).
PAYMENTS = [
    _payment("G-PLAIN"),
    _payment("G-UNICODE-ünï€😀", loan_account_number="LÄ-€", cif="ÇIF-😀"),
    _payment("G-CENT", amount=Decimal("0.01"), payment_date=DAY + timedelta(microseconds=1)),
    _payment("G-WHOLE", amount=Decimal("100"), payment_date=DAY.replace(hour=0)),
    _payment("G-MAX", amount=AMOUNT_MAX, payment_channel=None),
    _payment("G-QUOTES", loan_account_number="L\"\\'", payment_channel='"ch"\\'),
    _payment(
        "G-META",
        metadata={"nested": {"list": [1, 2.5, "x", None, True], "b": 1e20}, "é": "😀", "a": -0.0},
    ),
    _payment("G-STATUS", status="pending", metadata={}),
]
FIRST_ID = 0x0190_0000_0000_7000_8000_0000_0000_0000


def _candidates() -> list[Candidate]:
    return [
        Candidate(p, "generic", f"msg-{i}", b"{}", uuid.UUID(int=FIRST_ID + i))
        for i, p in enumerate(PAYMENTS)
    ]


def _expected(ref: str, published: bytes) -> bytes:
    """The golden payload with the timestamp the event carries (checked for shape)."""
    text = published.decode()
    found = TIMESTAMP.search(text)
    assert found, text
    return GOLDEN["events"][ref].replace("{TIMESTAMP}", found.group(1)).encode()


async def test_lean_rows_publish_exactly_the_bytes_stored_before(
    db: asyncpg.Pool, stack: stack_module.TestStack, relays: list[OutboxRelay]
) -> None:
    settings = relay_settings(stack)
    await ensure_topic(settings)
    before = time.time()
    async with db.acquire() as conn:
        await record_batch(
            conn, _candidates(), source="webhook", topic=settings.kafka_topic, actor="webhook"
        )
        rows = await conn.fetch(
            "SELECT e.payload, u.* FROM payment_service.event_log e, unnest(e.payment_ids,"
            " e.payment_dates, e.statuses) AS u(payment_id, payment_date, status)"
        )
        # The recorded event must carry the status as recorded, not the payment's current one.
        await apply_status(
            conn,
            StatusEvent("G-STATUS", "succeeded", None, "test", "test"),
            topic=settings.kafka_topic,
        )
    refs = {uuid.UUID(int=FIRST_ID + i): p.reference_number for i, p in enumerate(PAYMENTS)}
    lean = {refs[r["payment_id"]]: r for r in rows}
    assert len(lean) == len(PAYMENTS)
    assert all(r["payload"] is None for r in rows)  # nothing of the payment is copied
    assert lean["G-STATUS"]["status"] == "pending"
    assert lean["G-CENT"]["payment_date"] == DAY + timedelta(microseconds=1)

    await start_relay(relays, db, settings)
    records = await read_topic(settings, len(PAYMENTS) + 1)
    recorded = [r for r in records if headers(r)["event_type"] == "payment.recorded"]
    assert len(recorded) == len(PAYMENTS), [r.key for r in records]
    for record in recorded:
        assert record.key is not None and record.value is not None
        ref = record.key.decode()
        assert record.value == _expected(ref, record.value), ref
        stamp = datetime.fromisoformat(TIMESTAMP.search(record.value.decode()).group(1))  # type: ignore[union-attr]
        assert before - 5 <= stamp.timestamp() <= time.time() + 5
    # The status change came after the recorded event, on the same key.
    keys = [(r.key, headers(r)["event_type"]) for r in records if r.key == b"G-STATUS"]
    assert keys == [(b"G-STATUS", "payment.recorded"), (b"G-STATUS", "payment.status_changed")]


async def test_rows_queued_before_the_migration_are_published_from_their_payload(
    stack: stack_module.TestStack, relays: list[OutboxRelay], tmp_path: Path
) -> None:
    name = f"lean_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(stack.database_url)
    await admin.execute(f"CREATE DATABASE {name}")
    dsn = stack.database_url.rsplit("/", 1)[0] + "/" + name
    try:
        before_060 = tmp_path / "sql"
        before_060.mkdir()
        for f in sorted(SQL_DIR.glob("*.sql")):
            if f.name < "060":
                shutil.copy(f, before_060)
        await migrate(dsn, before_060)
        settings = relay_settings(stack, database_url=dsn)
        await ensure_topic(settings)
        queued = {
            ref: text.replace("{TIMESTAMP}", "2026-11-30T10:20:31.5Z").encode()
            for ref, text in GOLDEN["events"].items()
        }
        conn = await asyncpg.connect(dsn)
        try:
            for ref, payload in queued.items():  # as the writer queued them before 060
                event_id = json.loads(payload)["event_id"]
                await conn.execute(
                    "INSERT INTO payment_service.outbox (event_id, event_type, topic, key, payload)"
                    " VALUES ($1, 'payment.recorded', $2, $3, $4)",
                    uuid.UUID(event_id), settings.kafka_topic, ref, payload,
                )  # fmt: skip
        finally:
            await conn.close()
        assert "060_outbox_lean_rows" in await migrate(dsn)
        pool = await create_pool(settings, min_size=1, max_size=3)
        try:
            relay = await start_relay(relays, pool, settings)
            records = await read_topic(settings, len(queued))
            await relay.stop(grace=5)
            relays.remove(relay)
        finally:
            await pool.close()
        assert {r.key.decode(): r.value for r in records if r.key} == queued
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def test_an_event_whose_payment_is_gone_is_retried_not_published(
    db: asyncpg.Pool, stack: stack_module.TestStack, relays: list[OutboxRelay]
) -> None:
    settings = relay_settings(stack, outbox_max_attempts=2)
    async with db.acquire() as conn:
        await record_batch(
            conn, _candidates()[:1], source="webhook", topic=settings.kafka_topic, actor="t"
        )
        await conn.execute("DELETE FROM payment_service.payments")
    relay = OutboxRelay(db, settings)
    await relay.run_once()
    row = await db.fetchrow("SELECT attempts, last_error FROM payment_service.outbox")
    assert row is not None
    assert row["attempts"] == 1
    assert "no longer in payments" in row["last_error"]
    await relay.on_stop()
