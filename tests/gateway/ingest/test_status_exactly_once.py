"""Every acknowledged status change is applied exactly once (issue 33), through the real
app: a retry after a 503 is applied, a deferred update racing its payment is applied,
a provider time far in the future is refused on every path."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from aiohttp.test_utils import TestClient

from gateway.db.payments import Candidate, record_batch
from gateway.domain.model import Payment
from gateway.ingest.signatures import sign
from gateway.notify import Wakeup
from gateway.observability import metrics
from tests.conftest import make_settings, wait_for
from tests.events import queued_count
from tests.webhooks import GENERIC_KEY
from workers.partitions import PartitionMaintainer
from workers.status_poller import StatusPoller

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
PAYMENT_DATE = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _payment_doc(ref: str, **extra: Any) -> dict[str, Any]:
    doc = {"reference_number": ref, "loan_account_number": "LA-1", "cif": "CIF-1",
           "amount": "100.00", "payment_date": _iso(PAYMENT_DATE)}  # fmt: skip
    doc.update(extra)
    return doc


async def _post(
    client: TestClient[Any, Any], doc: dict[str, Any], *, delivery_id: str | None = None
) -> tuple[int, dict[str, Any]]:
    body = orjson.dumps(doc)
    headers = sign("standard", GENERIC_KEY, body, now=int(time.time()),
                   delivery_id=delivery_id or f"msg_{uuid.uuid4().hex}")  # fmt: skip
    headers["Content-Type"] = "application/json"
    resp = await client.post("/api/v1/payments/webhook", data=body, headers=headers)
    return resp.status, await resp.json(content_type=None)


async def _state(db: asyncpg.Pool, ref: str) -> tuple[str, int]:
    row = await db.fetchrow(
        "SELECT status, version FROM payment_service.payments WHERE reference_number = $1", ref
    )
    assert row is not None
    return row["status"], row["version"]


async def _lock_waiters(db: asyncpg.Pool) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()"
        )
    )


async def test_a_retry_after_a_503_applies_the_status_change(
    make_client: ClientFactory, db: asyncpg.Pool, stack: Any
) -> None:
    """Issue 33.1: the status path's connections are all waiting on a row lock, so Y's
    change answers 503; the same delivery (same webhook-id) sent again must apply it."""
    client = await make_client(db_pool_max=4, db_pool_min=1, database_gauges=False)
    blocked, target = f"X-{uuid.uuid4().hex[:10]}", f"Y-{uuid.uuid4().hex[:10]}"
    for ref in (blocked, target):
        assert (await _post(client, _payment_doc(ref, status="pending")))[0] == 201

    holder = await asyncpg.connect(stack.database_url)
    queued: list[asyncio.Task[tuple[int, dict[str, Any]]]] = []
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute(
            "SELECT 1 FROM payment_service.payments WHERE reference_number = $1 FOR UPDATE",
            blocked,
        )
        # Three status updates of X take the three connections the writer does not keep.
        queued = [
            asyncio.create_task(_post(client, {"reference_number": blocked, "status": "failed"}))
            for _ in range(3)
        ]
        await wait_for(lambda: _waiting(db, 3), timeout=15)
        status, body = await _post(
            client, _payment_doc(target, status="succeeded"), delivery_id="msg_retry_W"
        )
        assert status == 503, body
        await tx.rollback()
    finally:
        await holder.close()
    await asyncio.gather(*queued)

    status, body = await _post(
        client, _payment_doc(target, status="succeeded"), delivery_id="msg_retry_W"
    )
    assert (status, body["status"]) == (200, "updated"), body
    assert await _state(db, target) == ("succeeded", 2)


async def _waiting(db: asyncpg.Pool, n: int) -> bool:
    return await _lock_waiters(db) >= n


async def test_a_far_future_event_time_is_refused_on_every_webhook_path(
    make_client: ClientFactory, db: asyncpg.Pool
) -> None:
    """Issue 33.3: status-only `succeeded@2099` was applied (`updated`), after which no real
    event could ever move the payment; the full body with that time was already a 422."""
    client = await make_client()
    ref = f"F-{uuid.uuid4().hex[:10]}"
    assert (await _post(client, _payment_doc(ref, status="pending")))[0] == 201
    future = "2099-01-01T00:00:00Z"
    for doc in (
        {"reference_number": ref, "status": "succeeded", "event_time": future},  # applied path
        {"reference_number": "UNKNOWN-" + ref, "status": "failed", "event_time": future},  # park
        _payment_doc(ref, status="succeeded", event_time=future),  # full body
    ):
        status, body = await _post(client, doc)
        assert (status, body.get("error"), body.get("field")) == (
            422,
            "validation_error",
            "event_time",
        ), body
    assert await _state(db, ref) == ("pending", 1)
    assert await db.fetchval("SELECT count(*) FROM payment_service.pending_status_updates") == 0
    # A genuine later event still applies.
    later = _iso(datetime.now(UTC) + timedelta(minutes=1))
    status, body = await _post(
        client, {"reference_number": ref, "status": "succeeded", "event_time": later}
    )
    assert (status, body["status"]) == (200, "updated")


PAIRS = 1000
IN_FLIGHT = 16


async def test_deferred_updates_racing_their_payments_are_all_applied(
    make_client: ClientFactory, db: asyncpg.Pool
) -> None:
    """Issue 33.2: a status-only update and the payment it is about, sent at the same
    moment. With the status poller off (it is in tests), nothing but the two requests
    themselves can apply the update: each one must be applied, none left parked."""
    client = await make_client(db_pool_max=8)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    gate = asyncio.Semaphore(IN_FLIGHT)
    answers: list[int] = []

    async def pair(n: int) -> None:
        ref = f"PAIR-{n:05d}-{uuid.uuid4().hex[:6]}"
        update = {"reference_number": ref, "status": "succeeded",
                  "event_time": _iso(t0 + timedelta(seconds=5))}  # fmt: skip
        create = _payment_doc(ref, status="pending", event_time=_iso(t0))
        async with gate:
            for status, _ in await asyncio.gather(_post(client, update), _post(client, create)):
                answers.append(status)

    await asyncio.gather(*(pair(n) for n in range(PAIRS)))
    assert sorted(set(answers)) <= [200, 201, 202], sorted(set(answers))
    left = await db.fetchval("SELECT count(*) FROM payment_service.pending_status_updates")
    states = dict(
        await db.fetch("SELECT status, count(*) FROM payment_service.payments GROUP BY status")
    )
    events = await queued_count(db, "event_type = 'payment.status_changed'")
    assert (left, states, events) == (0, {"succeeded": PAIRS}, PAIRS)


async def _record_old(db: asyncpg.Pool, ref: str, day: datetime) -> None:
    payment = Payment(ref, "LA-1", "CIF-1", Decimal("10.00"), day, status="succeeded")
    async with db.acquire() as conn:
        await record_batch(conn, [Candidate(payment)], source="webhook", topic="t", actor="test")


async def _old_month(db: asyncpg.Pool, year: int, month: int) -> str:
    """A payments partition for a month long past retention (the DEFAULT partition
    would never be retired), created for this test."""
    name = f"payments_{year:04d}_{month:02d}"
    lo, hi = datetime(year, month, 1), datetime(year + month // 12, month % 12 + 1, 1)
    await db.execute(f"DROP TABLE IF EXISTS payment_service.{name}")
    await db.execute(
        f"CREATE TABLE payment_service.{name} PARTITION OF payment_service.payments "
        f"FOR VALUES FROM ('{lo}') TO ('{hi}')"
    )
    return name


async def _reviews(db: asyncpg.Pool) -> dict[str, tuple[str, str, int]]:
    rows = await db.fetch(
        "SELECT reference_number, source, provider_status, occurrences "
        "FROM payment_service.payment_reviews WHERE reason = 'payment_retired'"
    )
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


async def test_status_events_and_parked_updates_for_a_retired_month_reach_the_queue(
    make_client: ClientFactory, db: asyncpg.Pool, stack: Any
) -> None:
    """Issue 33.4: a status event for a payment whose month was retired answered
    `200 {"status": "missing"}` (nothing applied, parked or audited), a parked update for
    such a payment was deleted by the poller's next pass, and retention ran regardless."""
    settings = make_settings(stack, partition_retention_action="drop")
    client = await make_client(settings)
    month = await _old_month(db, 2001, 1)
    kept, parked = f"RET-{uuid.uuid4().hex[:8]}", f"RETP-{uuid.uuid4().hex[:8]}"
    for ref in (kept, parked):
        await _record_old(db, ref, datetime(2001, 1, 15))
    await db.execute(
        "INSERT INTO payment_service.pending_status_updates (reference_number, status, channel) "
        "VALUES ($1, 'refunded', 'generic')",
        parked,
    )

    maintainer = PartitionMaintainer(db, settings)
    report = await maintainer.maintain()
    assert report.held.get(month, {}).get("parked_updates") == 1, report
    assert await db.fetchval("SELECT to_regclass($1)", f"payment_service.{month}") is not None
    forced = await PartitionMaintainer(db, settings, force=True).maintain()
    assert month in forced.dropped, forced
    assert await db.fetchval("SELECT count(*) FROM payment_service.pending_status_updates") == 0
    assert (await _reviews(db))[parked] == ("retention", "refunded", 1)

    retired_before = metrics.status_updates.labels("retired")._value.get()
    status, body = await _post(client, {"reference_number": kept, "status": "refunded"})
    assert (status, body["status"], body["reference_number"]) == (202, "retired", kept), body
    assert (await _reviews(db))[kept] == ("webhook", "refunded", 1)
    assert metrics.status_updates.labels("retired")._value.get() == retired_before + 1
    stored = await db.fetchval(
        "SELECT outcome FROM payment_service.webhook_events WHERE reference_number = $1", kept
    )
    assert stored == "retired"
    audited = await db.fetchval(
        "SELECT count(*) FROM payment_service.audit_log WHERE action = 'status_for_retired_payment'"
    )
    assert audited == 2  # the parked update retention moved, and this event

    # A month taken away behind maintenance's back: the poller's sweep finds the parked
    # update of a payment that is gone, and queues it instead of deleting it.
    month = await _old_month(db, 2001, 2)
    swept = f"RETS-{uuid.uuid4().hex[:8]}"
    await _record_old(db, swept, datetime(2001, 2, 10))
    await db.execute(
        "INSERT INTO payment_service.pending_status_updates (reference_number, status, channel) "
        "VALUES ($1, 'reversed', 'generic')",
        swept,
    )
    await db.execute(f"DROP TABLE payment_service.{month}")
    poller = StatusPoller(db, settings, Wakeup())
    try:
        await poller.run_once()
    finally:
        await poller.on_stop()
    assert await db.fetchval("SELECT count(*) FROM payment_service.pending_status_updates") == 0
    assert (await _reviews(db))[swept] == ("parked_webhook", "reversed", 1)
