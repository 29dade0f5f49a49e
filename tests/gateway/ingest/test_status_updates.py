"""Payment lifecycle against the real stack: webhooks that change a status, arrive stale,
arrive before their payment, or race each other."""

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
import pytest
from aiohttp.test_utils import TestClient

from gateway.db.payments import Candidate, record_batch
from gateway.db.status import StatusEvent, apply_status
from gateway.domain.model import Payment
from gateway.errors import ValidationError
from gateway.ingest.signatures import decode_secret, sign
from gateway.ingest.status_updates import is_status_only, parse_status_update
from gateway.observability import metrics
from tests.conftest import TEST_SECRET
from tests.events import QUEUED

KEY = decode_secret("standard", TEST_SECRET)
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


# One payment date for every document of the module: a payment re-sent in a test must
# be the same payment, and `now` read twice could straddle a second (a 409 conflict).
PAYMENT_DATE = _iso(datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0))


def _payment_doc(ref: str, **extra: Any) -> dict[str, Any]:
    doc = {
        "reference_number": ref,
        "loan_account_number": "LA-1",
        "cif": "CIF-1",
        "amount": "100.00",
        "payment_date": PAYMENT_DATE,
    }
    doc.update(extra)
    return doc


async def _post(client: TestClient[Any, Any], doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    body = orjson.dumps(doc)
    headers = sign(
        "standard", KEY, body, now=int(time.time()), delivery_id=f"msg_{uuid.uuid4().hex}"
    )
    headers["Content-Type"] = "application/json"
    resp = await client.post("/api/v1/payments/webhook", data=body, headers=headers)
    return resp.status, await resp.json(content_type=None)


async def _payment(db: asyncpg.Pool, ref: str) -> asyncpg.Record:
    row = await db.fetchrow(
        "SELECT status, version, provider_event_at FROM payment_service.payments "
        "WHERE reference_number = $1",
        ref,
    )
    assert row is not None
    return row


async def _status_events(db: asyncpg.Pool, ref: str) -> list[dict[str, Any]]:
    rows = await db.fetch(
        f"SELECT payload FROM {QUEUED} e WHERE key = $1 "
        "AND event_type = 'payment.status_changed' ORDER BY created_at",
        ref,
    )
    return [orjson.loads(r["payload"]) for r in rows]


def test_status_only_recognises_bodies_without_payment_fields() -> None:
    assert is_status_only({"reference_number": "R", "status": "failed"})
    assert not is_status_only({"reference_number": "R", "status": "failed", "amount": "1.00"})
    assert not is_status_only({"reference_number": "R"})
    assert not is_status_only(["R", "failed"])


def test_status_update_validation_names_the_field() -> None:
    latest = datetime(2026, 12, 31)
    with pytest.raises(ValidationError) as exc:
        parse_status_update({"reference_number": "R", "status": "done"}, latest=latest)
    assert exc.value.field == "status"
    with pytest.raises(ValidationError) as exc:
        parse_status_update({"reference_number": " ", "status": "failed"}, latest=latest)
    assert exc.value.field == "reference_number"
    update = parse_status_update(
        {"reference_number": "R", "status": "failed", "event_time": 0}, latest=latest
    )
    assert update.event_at == datetime(1970, 1, 1)
    with pytest.raises(ValidationError) as exc:
        parse_status_update(
            {"reference_number": "R", "status": "failed", "event_time": "2027-01-01T00:00:01Z"},
            latest=latest,
        )
    assert exc.value.field == "event_time"


async def test_status_webhook_updates_and_stale_ones_are_ignored(
    make_client: ClientFactory, db: asyncpg.Pool
) -> None:
    client = await make_client()
    ref = f"LC-{uuid.uuid4().hex[:12]}"
    t0 = datetime.now(UTC).replace(microsecond=0)
    status, body = await _post(client, _payment_doc(ref, status="pending", event_time=_iso(t0)))
    assert status == 201, body

    status, body = await _post(
        client,
        {
            "reference_number": ref,
            "status": "succeeded",
            "event_time": _iso(t0 + timedelta(seconds=5)),
        },
    )
    assert (status, body["status"]) == (200, "updated")
    row = await _payment(db, ref)
    assert (row["status"], row["version"]) == ("succeeded", 2)
    [event] = await _status_events(db, ref)
    assert (event["old_status"], event["new_status"], event["cause"]) == (
        "pending",
        "succeeded",
        "webhook",
    )
    audit = await db.fetchrow(
        "SELECT details FROM payment_service.audit_log WHERE reference_number = $1 "
        "AND action = 'status_change'",
        ref,
    )
    assert audit is not None and (audit["details"]["old"], audit["details"]["new"]) == (
        "pending",
        "succeeded",
    )

    stale_before = metrics.status_updates.labels("stale")._value.get()
    # An older event, and a regression out of a later state: acknowledged, not applied.
    status, body = await _post(
        client, {"reference_number": ref, "status": "failed", "event_time": _iso(t0)}
    )
    assert (status, body["status"]) == (200, "stale")
    status, body = await _post(client, {"reference_number": ref, "status": "pending"})
    assert (status, body["status"]) == (200, "stale")
    assert metrics.status_updates.labels("stale")._value.get() == stale_before + 2
    assert (await _payment(db, ref))["version"] == 2

    # The same payment re-sent in full with a later status goes the payment path.
    status, body = await _post(client, _payment_doc(ref, status="refunded"))
    assert (status, body["status"]) == (200, "updated")
    assert (await _payment(db, ref))["status"] == "refunded"
    assert [e["new_status"] for e in await _status_events(db, ref)] == ["succeeded", "refunded"]


async def test_update_before_its_payment_is_kept_and_applied_on_arrival(
    make_client: ClientFactory, db: asyncpg.Pool
) -> None:
    client = await make_client()
    ref = f"EARLY-{uuid.uuid4().hex[:12]}"
    status, body = await _post(client, {"reference_number": ref, "status": "failed"})
    assert status in (200, 202) and body["status"] == "deferred"
    parked = await db.fetch(
        "SELECT status FROM payment_service.pending_status_updates WHERE reference_number = $1", ref
    )
    assert [r["status"] for r in parked] == ["failed"]

    status, body = await _post(client, _payment_doc(ref, status="pending"))
    assert status == 201, body
    assert (await _payment(db, ref))["status"] == "failed"
    assert (
        await db.fetchval(
            "SELECT count(*) FROM payment_service.pending_status_updates "
            "WHERE reference_number = $1",
            ref,
        )
        == 0
    )
    [event] = await _status_events(db, ref)
    assert (event["old_status"], event["new_status"], event["cause"]) == (
        "pending",
        "failed",
        "parked_webhook",
    )


async def test_concurrent_updates_of_one_payment_lose_nothing(db: asyncpg.Pool) -> None:
    ref = f"RACE-{uuid.uuid4().hex[:12]}"
    now = datetime.now(UTC).replace(tzinfo=None)
    payment = Payment(ref, "LA-1", "CIF-1", Decimal("10.00"), now, status="pending")
    async with db.acquire() as conn:
        await record_batch(conn, [Candidate(payment)], source="webhook", topic="t", actor="test")

    plan = [("succeeded", now + timedelta(seconds=i)) for i in range(10)]
    plan += [("refunded", now + timedelta(seconds=20 + i)) for i in range(10)]

    async def one(status: str, at: datetime) -> str:
        async with db.acquire() as conn:
            event = StatusEvent(ref, status, at, cause="test", actor="test")
            result = await apply_status(conn, event, topic="t")
            return result.outcome

    outcomes = await asyncio.gather(*(one(s, t) for s, t in plan))
    applied = outcomes.count("updated")
    row = await _payment(db, ref)
    assert row["status"] == "refunded"
    assert 1 <= applied <= 2
    assert row["version"] == 1 + applied
    assert len(await _status_events(db, ref)) == applied
    assert (
        await db.fetchval(
            "SELECT count(*) FROM payment_service.audit_log WHERE reference_number = $1 "
            "AND action = 'status_change'",
            ref,
        )
        == applied
    )


def _stripe_event(event_type: str, obj: dict[str, Any], created: int) -> dict[str, Any]:
    return {"id": f"evt_{uuid.uuid4().hex[:16]}", "type": event_type, "created": created,
            "data": {"object": obj}}  # fmt: skip


async def test_stripe_refund_reaches_the_state_machine(
    make_client: ClientFactory, db: asyncpg.Pool, tmp_path: Any, stack: Any
) -> None:
    from tests.conftest import make_settings

    secret = "whsec_stripe_status_test_0001"
    path = tmp_path / "channels.toml"
    path.write_text(f'[channels.stripe]\npreset = "stripe"\nsecrets = ["{secret}"]\n')
    client = await make_client(make_settings(stack, channels_file=str(path)))
    key = decode_secret("stripe", secret)
    created = int(time.time()) - 60
    meta = {"loan_account_number": "LA-9", "cif": "CIF-9"}
    pi = {"id": "pi_status_1", "object": "payment_intent", "amount": 2500, "currency": "usd",
          "created": created, "metadata": meta}  # fmt: skip
    # A real charge is created seconds after its PaymentIntent: not a conflict for Stripe.
    charge = {"id": "ch_1", "object": "charge", "payment_intent": "pi_status_1", "amount": 2500,
              "currency": "usd", "created": created + 4, "metadata": meta}  # fmt: skip

    async def send(doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        body = orjson.dumps(doc)
        headers = sign("stripe", key, body, now=int(time.time()), delivery_id=doc["id"])
        headers["Content-Type"] = "application/json"
        resp = await client.post("/api/v1/payments/webhook/stripe", data=body, headers=headers)
        return resp.status, await resp.json(content_type=None)

    assert (await send(_stripe_event("payment_intent.succeeded", pi, created)))[0] == 201
    status, body = await send(_stripe_event("charge.refunded", charge, created + 30))
    assert (status, body["status"]) == (200, "updated")
    assert (await _payment(db, "pi_status_1"))["status"] == "refunded"
    # A late, older "processing" event no longer moves it.
    status, body = await send(_stripe_event("payment_intent.processing", pi, created - 10))
    assert (status, body["status"]) == (200, "stale")
