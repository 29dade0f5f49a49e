"""Each provider preset through the real app and real Postgres: a valid delivery, a wrong
signature, a stale one where a time is signed, a replay, a status change through the
state machine, an unknown event ignored, and multi-event deliveries (Adyen, GoCardless)
that are 2xx only when every event is committed and record nothing twice on a retry."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from gateway.ingest.schemes import adyen, paddle, paypal, square
from gateway.ingest.schemes.hmac_hex import HexBodyScheme
from gateway.ingest.schemes.registry import build_scheme, decode_key
from tests.conftest import make_settings
from tests.events import queued_count
from tests.paypal_ca import CertServer, cert_server, pem, private_ca
from tests.webhooks import payment_doc, post_webhook
from workers.cli.devstack import free_port

ADYEN_HEX = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
ADYEN_KEY = decode_key("adyen", ADYEN_HEX)
SECRET = "provider-secret-0001"
KEY = SECRET.encode()
SQUARE_URL = "https://pay.example.com/api/v1/payments/webhook/square"
PAYPAL_WEBHOOK_ID = "8PT597110X687430LKGECATA"
META = {"loan_account_number": "LA-7", "cif": "CIF-7"}


def iso(delta: float = 0.0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ref(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:14]}"


@pytest.fixture
async def certs(tmp_path: Path) -> AsyncIterator[CertServer]:
    """The https server standing in for PayPal's certificate URL."""
    async with cert_server(tmp_path) as server:
        yield server


@pytest.fixture
async def client(
    make_client: Any, stack: Any, tmp_path: Path, certs: CertServer
) -> TestClient[Any, Any]:
    host, ca_file, served = certs.host, certs.ca_file, certs.served
    path = tmp_path / "channels.toml"
    path.write_text(f"""
[channels.adyen]
preset = "adyen"
secrets = ["{ADYEN_HEX}"]

[channels.square]
preset = "square"
secrets = ["{SECRET}"]
[channels.square.verify]
notification_url = "{SQUARE_URL}"

[channels.razorpay]
preset = "razorpay"
secrets = ["{SECRET}"]

[channels.paddle]
preset = "paddle"
secrets = ["{SECRET}"]

[channels.checkout]
preset = "checkout"
secrets = ["{SECRET}"]
[channels.checkout.verify]
authorization = "cko-authorization-key"

[channels.paypal]
preset = "paypal"
[channels.paypal.verify]
webhook_id = "{PAYPAL_WEBHOOK_ID}"
cert_hosts = ["{host}"]
ca_file = "{ca_file}"

[channels.gocardless]
preset = "gocardless"
secrets = ["{SECRET}"]
""")
    c: TestClient[Any, Any] = await make_client(make_settings(stack, channels_file=str(path)))
    c.cert_host = host  # type: ignore[attr-defined]
    c.certs_served = served  # type: ignore[attr-defined]
    return c


async def post(
    client: TestClient[Any, Any], channel: str, body: bytes, headers: dict[str, str]
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", **headers}
    resp = await client.post(f"/api/v1/payments/webhook/{channel}", data=body, headers=headers)
    text = await resp.text()
    try:
        return resp.status, orjson.loads(text)
    except orjson.JSONDecodeError:
        return resp.status, text


async def payment(db: asyncpg.Pool, reference: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT status, amount, loan_account_number, cif, payment_channel "
        "FROM payment_service.payments WHERE reference_number = $1",
        reference,
    )


async def raw_count(db: asyncpg.Pool, references: list[str]) -> int:
    """Raw deliveries kept in webhook_events for these references."""
    return int(
        await db.fetchval(
            "SELECT count(*) FROM payment_service.webhook_events WHERE reference_number = ANY($1)",
            references,
        )
    )


async def outbox_count(db: asyncpg.Pool, references: list[str]) -> int:
    """Events for consumers (payment.created, payment.status_changed) about these references."""
    return await queued_count(db, "key = ANY($1)", references)


async def parked(db: asyncpg.Pool, reference: str) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM payment_service.pending_status_updates "
            "WHERE reference_number = $1",
            reference,
        )
    )


async def count(db: asyncpg.Pool, reference: str) -> tuple[int, int]:
    payments = await db.fetchval(
        "SELECT count(*) FROM payment_service.payments WHERE reference_number = $1", reference
    )
    changes = await db.fetchval(
        "SELECT count(*) FROM payment_service.audit_log WHERE reference_number = $1 "
        "AND action = 'status_change'",
        reference,
    )
    return payments, changes


# -- Adyen --------------------------------------------------------------------------------


def adyen_item(psp: str, code: str = "AUTHORISATION", success: str = "true", **kw: Any) -> Any:
    item = {
        "eventCode": code,
        "success": success,
        "pspReference": psp,
        "merchantAccountCode": "TestMerchant",
        "merchantReference": "LA-7",
        "amount": {"value": 1130, "currency": "EUR"},
        "eventDate": iso(),
        "additionalData": {"metadata.cif": "CIF-7"},
    }
    item.update(kw)
    return item


async def test_adyen_batch_is_accepted_only_when_every_item_is_committed(
    client: Any, db: asyncpg.Pool
) -> None:
    first, second = ref("psp"), ref("psp")
    jpy = {"value": 500, "currency": "JPY"}
    items = [adyen_item(first), adyen_item(second, amount=jpy)]
    items.append(adyen_item(ref("psp"), code="REPORT_AVAILABLE"))  # not a payment: ignored
    body = adyen.notification(ADYEN_KEY, items)
    status, answer = await post(client, "adyen", body, {})
    assert (status, answer) == (200, "[accepted]")
    row = await payment(db, first)
    assert row is not None and row["status"] == "succeeded"
    assert (row["amount"], row["loan_account_number"], row["cif"]) == (
        Decimal("11.30"),
        "LA-7",
        "CIF-7",
    )
    yen = await payment(db, second)
    assert yen is not None and yen["amount"] == 500  # JPY has no minor unit

    # Adyen retries the whole notification: accepted again, nothing recorded twice.
    assert await post(client, "adyen", body, {}) == (200, "[accepted]")
    assert await count(db, first) == (1, 0)
    assert await raw_count(db, [first, second]) == 2


async def test_adyen_refund_moves_the_payment_and_a_forged_item_fails_all(
    client: Any, db: asyncpg.Pool
) -> None:
    psp = ref("psp")
    assert (await post(client, "adyen", adyen.notification(ADYEN_KEY, [adyen_item(psp)]), {}))[
        0
    ] == 200
    refund = adyen_item(ref("rf"), code="REFUND", originalReference=psp, eventDate=iso(5))
    assert await post(client, "adyen", adyen.notification(ADYEN_KEY, [refund]), {}) == (
        200,
        "[accepted]",
    )
    row = await payment(db, psp)
    assert row is not None and row["status"] == "refunded"

    other = ref("psp")
    genuine = adyen.sign_item(ADYEN_KEY, adyen_item(other))
    forged = adyen.sign_item(ADYEN_KEY, adyen_item(ref("psp")))
    forged["amount"] = {"value": 1, "currency": "EUR"}
    body = orjson.dumps(
        {
            "notificationItems": [
                {"NotificationRequestItem": genuine},
                {"NotificationRequestItem": forged},
            ]
        }
    )
    status, answer = await post(client, "adyen", body, {})
    assert (status, answer["reason"]) == (401, "signature_mismatch")
    assert await payment(db, other) is None


async def test_adyen_batch_with_a_bad_item_is_not_accepted_and_the_retry_records_once(
    client: Any, db: asyncpg.Pool
) -> None:
    good = ref("psp")
    bad = adyen_item(ref("psp"), amount={"value": "x", "currency": "EUR"})  # not an amount
    body = adyen.notification(ADYEN_KEY, [adyen_item(good), bad])
    status, answer = await post(client, "adyen", body, {})
    assert status == 422 and answer["event_index"] == 1
    assert await count(db, good) == (1, 0)  # committed; Adyen will retry the notification
    status, _ = await post(client, "adyen", body, {})
    assert status == 422
    assert await count(db, good) == (1, 0)


# -- Square -------------------------------------------------------------------------------


def square_event(kind: str, payment_id: str, status: str, **over: Any) -> bytes:
    obj = {
        "id": payment_id,
        "status": status,
        "amount_money": {"amount": 2599, "currency": "USD"},
        "reference_id": "LA-7",
        "customer_id": "CIF-7",
        "created_at": iso(-60),
        "updated_at": over.pop("updated_at", iso()),
    }
    doc = {
        "merchant_id": "M1",
        "type": kind,
        "event_id": str(uuid.uuid4()),
        "created_at": iso(),
        "data": {"type": "payment", "id": payment_id, "object": {"payment": obj}},
    }
    doc.update(over)
    return orjson.dumps(doc)


async def test_square_payment_status_change_replay_and_wrong_url(
    client: Any, db: asyncpg.Pool
) -> None:
    pid = ref("sq")
    body = square_event("payment.created", pid, "APPROVED", updated_at=iso(-30))
    status, answer = await post(client, "square", body, square.sign(KEY, SQUARE_URL, body))
    assert (status, answer["status"]) == (201, "created")
    assert await post(client, "square", body, square.sign(KEY, SQUARE_URL, body)) == (
        200,
        {"status": "duplicate", "payment_id": answer["payment_id"]},
    )
    done = square_event("payment.updated", pid, "COMPLETED")
    status, answer = await post(client, "square", done, square.sign(KEY, SQUARE_URL, done))
    assert (status, answer["status"]) == (200, "updated")
    row = await payment(db, pid)
    assert row is not None and (row["status"], str(row["amount"])) == ("succeeded", "25.99")

    # Signed for another URL (what a proxy's rewritten address would produce): refused.
    wrong = square.sign(KEY, "http://10.0.0.5:3004/api/v1/payments/webhook/square", done)
    status, answer = await post(client, "square", done, wrong)
    assert (status, answer["reason"]) == (401, "signature_mismatch")
    ignored = orjson.dumps({"type": "customer.created", "event_id": "e-x", "data": {}})
    assert await post(client, "square", ignored, square.sign(KEY, SQUARE_URL, ignored)) == (
        200,
        {"status": "ignored", "event_type": "customer.created"},
    )


# -- Razorpay -----------------------------------------------------------------------------


def razorpay_event(event: str, pay_id: str, created: int, refund: bool = False) -> bytes:
    entity = {
        "id": pay_id,
        "entity": "payment",
        "amount": 50000,
        "currency": "INR",
        "status": "captured",
        "notes": META,
        "created_at": created - 100,
    }
    payload: dict[str, Any] = {"payment": {"entity": entity}}
    if refund:
        payload["refund"] = {
            "entity": {"id": ref("rfnd_"), "payment_id": pay_id, "amount": 50000, "currency": "INR"}
        }
    return orjson.dumps(
        {"entity": "event", "event": event, "payload": payload, "created_at": created}
    )


async def test_razorpay_capture_refund_replay_and_forgery(client: Any, db: asyncpg.Pool) -> None:
    scheme = build_scheme("razorpay", {})
    assert isinstance(scheme, HexBodyScheme)
    pay, now = ref("pay_"), int(time.time())
    body = razorpay_event("payment.captured", pay, now - 60)
    headers = scheme.sign(KEY, body, delivery_id=ref("evt_"))
    status, answer = await post(client, "razorpay", body, headers)
    assert (status, answer["status"]) == (201, "created")
    assert (await post(client, "razorpay", body, headers))[1]["status"] == "duplicate"
    refund = razorpay_event("refund.processed", pay, now, refund=True)
    status, answer = await post(
        client, "razorpay", refund, scheme.sign(KEY, refund, delivery_id=ref("evt_"))
    )
    assert (status, answer["status"]) == (200, "updated")
    row = await payment(db, pay)
    assert row is not None and (row["status"], str(row["amount"])) == ("refunded", "500.00")
    forged = scheme.sign(b"not-the-secret", body)
    assert (await post(client, "razorpay", body, forged))[0] == 401
    other = razorpay_event("order.paid", ref("pay_"), now)
    assert (await post(client, "razorpay", other, scheme.sign(KEY, other)))[1] == {
        "status": "ignored",
        "event_type": "order.paid",
    }


# -- Paddle -------------------------------------------------------------------------------


def paddle_event(event_type: str, txn: str, occurred: str, **data: Any) -> bytes:
    body = {
        "id": txn,
        "status": "completed",
        "customer_id": "ctm_1",
        "currency_code": "USD",
        "custom_data": META,
        "created_at": iso(-120),
        "billed_at": iso(-60),
        "details": {"totals": {"grand_total": "1150"}},
    }
    body.update(data)
    return orjson.dumps(
        {
            "event_id": ref("evt_"),
            "event_type": event_type,
            "occurred_at": occurred,
            "notification_id": ref("ntf_"),
            "data": body,
        }
    )


async def test_paddle_transaction_refund_stale_and_replay(client: Any, db: asyncpg.Pool) -> None:
    txn, now = ref("txn_"), int(time.time())
    billed = paddle_event("transaction.billed", txn, iso(-50), status="billed")
    status, answer = await post(client, "paddle", billed, paddle.sign(KEY, billed, now=now))
    assert (status, answer["status"]) == (201, "created")
    done = paddle_event("transaction.completed", txn, iso(-40))
    headers = paddle.sign(KEY, done, now=now)
    assert (await post(client, "paddle", done, headers))[1]["status"] == "updated"
    assert (await post(client, "paddle", done, headers))[1]["status"] == "duplicate"  # replay
    forged = paddle.sign(b"pdl_ntfset_not_ours", done, now=now)
    status, answer = await post(client, "paddle", done, forged)
    assert (status, answer["reason"]) == (401, "signature_mismatch")
    stale = paddle.sign(KEY, done, now=now - 301)
    status, answer = await post(client, "paddle", done, stale)
    assert (status, answer["reason"]) == (401, "timestamp_out_of_tolerance")
    refund = orjson.dumps(
        {
            "event_id": ref("evt_"),
            "event_type": "adjustment.updated",
            "occurred_at": iso(),
            "data": {
                "id": "adj_1",
                "action": "refund",
                "status": "approved",
                "transaction_id": txn,
            },
        }
    )
    status, answer = await post(client, "paddle", refund, paddle.sign(KEY, refund, now=now))
    assert (status, answer["status"]) == (200, "updated")
    row = await payment(db, txn)
    assert row is not None and (row["status"], str(row["amount"])) == ("refunded", "11.50")
    pending = orjson.dumps(
        {
            "event_id": ref("evt_"),
            "event_type": "adjustment.created",
            "occurred_at": iso(),
            "data": {"action": "refund", "status": "pending_approval", "transaction_id": txn},
        }
    )
    assert (await post(client, "paddle", pending, paddle.sign(KEY, pending, now=now)))[1] == {
        "status": "ignored",
        "event_type": "adjustment.created:refund:pending_approval",
    }


# -- Checkout.com -------------------------------------------------------------------------


def checkout_event(kind: str, pay: str, created: str, event_id: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "id": event_id or ref("evt_"),
            "type": kind,
            "created_on": created,
            "data": {
                "id": pay,
                "amount": 6540,
                "currency": "KWD",
                "reference": "ORD-1",
                "metadata": META,
                "processed_on": iso(-100),
            },
        }
    )


async def test_checkout_authorization_key_capture_and_void_after_capture(
    client: Any, db: asyncpg.Pool
) -> None:
    scheme = build_scheme("checkout", {})
    assert isinstance(scheme, HexBodyScheme)
    auth = {"Authorization": "cko-authorization-key"}
    pay = ref("pay_")
    approved = checkout_event("payment_approved", pay, iso(-30))
    status, answer = await post(client, "checkout", approved, scheme.sign(KEY, approved))
    assert (status, answer["reason"]) == (401, "authorization_mismatch")
    status, answer = await post(
        client, "checkout", approved, {**scheme.sign(KEY, approved), **auth}
    )
    assert (status, answer["status"]) == (201, "created")
    forged = {**scheme.sign(b"not-the-signature-key", approved), **auth}
    status, answer = await post(client, "checkout", approved, forged)
    assert (status, answer["reason"]) == (401, "signature_mismatch")
    captured = checkout_event("payment_captured", pay, iso(-20))
    headers = {**scheme.sign(KEY, captured), **auth}
    assert (await post(client, "checkout", captured, headers))[1]["status"] == "updated"
    status, answer = await post(client, "checkout", captured, headers)  # a replay
    assert (status, answer["status"]) == (200, "duplicate")
    assert await count(db, pay) == (1, 1)
    void = checkout_event("payment_voided", pay, iso(-10))  # a final state cannot regress
    assert (await post(client, "checkout", void, {**scheme.sign(KEY, void), **auth}))[1][
        "status"
    ] == "stale"
    row = await payment(db, pay)
    assert row is not None and (row["status"], str(row["amount"])) == ("succeeded", "6.54")
    other = checkout_event("card_verified", ref("pay_"), iso())
    assert await post(client, "checkout", other, {**scheme.sign(KEY, other), **auth}) == (
        200,
        {"status": "ignored", "event_type": "card_verified"},
    )


# -- PayPal -------------------------------------------------------------------------------


def paypal_event(kind: str, capture: str) -> bytes:
    return orjson.dumps(
        {
            "id": ref("WH-"),
            "event_type": kind,
            "create_time": iso(),
            "resource_type": "capture",
            "resource": {
                "id": capture,
                "status": "COMPLETED",
                "amount": {"currency_code": "USD", "value": "10.99"},
                "invoice_id": "LA-7",
                "custom_id": "CIF-7",
                "create_time": iso(-60),
                "update_time": iso(-1),
            },
        }
    )


async def test_paypal_certificate_is_fetched_once_and_deliveries_verify(
    client: Any, db: asyncpg.Pool
) -> None:
    ca, host = private_ca(), client.cert_host
    url = f"https://{host}/v1/notifications/certs/CERT-test-1"
    capture = ref("CAP")

    def signed(body: bytes, *, now: int | None = None, cert_url: str = url) -> dict[str, str]:
        return paypal.sign(
            ca.signing_key,
            body,
            cert_url=cert_url,
            webhook_id=PAYPAL_WEBHOOK_ID,
            transmission_id=str(uuid.uuid4()),
            now=now or int(time.time()),
        )

    pending = paypal_event("PAYMENT.CAPTURE.PENDING", capture)
    status, answer = await post(client, "paypal", pending, signed(pending))
    assert (status, answer["status"]) == (201, "created")
    completed = paypal_event("PAYMENT.CAPTURE.COMPLETED", capture)
    headers = signed(completed)
    assert (await post(client, "paypal", completed, headers))[1]["status"] == "updated"
    assert (await post(client, "paypal", completed, headers))[1]["status"] == "duplicate"
    row = await payment(db, capture)
    assert row is not None and (row["status"], str(row["amount"])) == ("succeeded", "10.99")

    stale = signed(completed, now=int(time.time()) - 301)
    assert (await post(client, "paypal", completed, stale))[1]["reason"] == (
        "timestamp_out_of_tolerance"
    )
    tampered = paypal_event("PAYMENT.CAPTURE.COMPLETED", ref("CAP"))
    assert (await post(client, "paypal", tampered, headers))[1]["reason"] == "signature_mismatch"
    elsewhere = signed(pending, cert_url="https://api.paypal.com.example/v1/notifications/certs/X")
    assert (await post(client, "paypal", pending, elsewhere))[1]["reason"] == (
        "untrusted_certificate"
    )
    refund = paypal_event("PAYMENT.CAPTURE.REFUNDED", capture)
    assert (await post(client, "paypal", refund, signed(refund)))[1]["status"] == "ignored"
    assert client.certs_served == ["/v1/notifications/certs/CERT-test-1"]  # fetched once


async def test_paypal_certificate_host_down_is_a_503_not_a_pass(
    make_client: Any, stack: Any, tmp_path: Path
) -> None:
    ca = private_ca()
    (tmp_path / "ca.pem").write_bytes(pem(ca.root))
    port = free_port()  # nothing listens here
    path = tmp_path / "channels.toml"
    path.write_text(f"""[channels.paypal]
preset = "paypal"
[channels.paypal.verify]
webhook_id = "{PAYPAL_WEBHOOK_ID}"
cert_hosts = ["127.0.0.1:{port}"]
ca_file = "{tmp_path / "ca.pem"}"
""")
    client = await make_client(make_settings(stack, channels_file=str(path)))
    body = paypal_event("PAYMENT.CAPTURE.COMPLETED", ref("CAP"))
    headers = paypal.sign(
        ca.signing_key,
        body,
        webhook_id=PAYPAL_WEBHOOK_ID,
        cert_url=f"https://127.0.0.1:{port}/v1/notifications/certs/C",
        transmission_id="t-1",
        now=int(time.time()),
    )
    resp = await client.post("/api/v1/payments/webhook/paypal", data=body, headers=headers)
    assert resp.status == 503 and resp.headers["Retry-After"]
    assert (await resp.json())["error"] == "certificate_unavailable"


# -- GoCardless ---------------------------------------------------------------------------


def gocardless_webhook(*events: dict[str, Any]) -> bytes:
    return orjson.dumps({"events": list(events), "meta": {"webhook_id": ref("WB")}})


def gc_event(payment_id: str, action: str, at: str, resource: str = "payments") -> dict[str, Any]:
    return {
        "id": ref("EV"),
        "created_at": at,
        "action": action,
        "resource_type": resource,
        "links": {"payment": payment_id},
        "details": {"origin": "gocardless"},
    }


async def test_gocardless_batch_of_status_changes_parks_then_applies_once(
    client: Any, db: asyncpg.Pool
) -> None:
    scheme = build_scheme("gocardless", {})
    assert isinstance(scheme, HexBodyScheme)
    known, unknown = ref("PM"), ref("PM")
    # A payment recorded through another path (here: the generic channel's body).
    status, _, _ = await post_webhook(client, payment_doc(known, status="pending"))
    assert status == 201
    body = gocardless_webhook(
        gc_event(known, "submitted", iso(-20)),
        gc_event(known, "confirmed", iso(-10)),
        gc_event(unknown, "confirmed", iso(-5)),
        gc_event("MD1", "created", iso(), "mandates"),
    )
    status, answer = await post(client, "gocardless", body, scheme.sign(KEY, body))
    assert status == 200
    outcomes = [e["status"] for e in answer["events"]]
    assert outcomes == ["duplicate", "updated", "deferred", "ignored"]
    row = await payment(db, known)
    assert row is not None and row["status"] == "succeeded"
    assert await parked(db, unknown) == 1
    events = await outbox_count(db, [known, unknown])
    # GoCardless retries the whole webhook: every event answered again, nothing twice
    # (the retry itself is logged in webhook_events, as every delivery is).
    status, again = await post(client, "gocardless", body, scheme.sign(KEY, body))
    assert status == 200 and [e["status"] for e in again["events"]][1:3] == [
        "duplicate",
        "deferred",
    ]
    assert await count(db, known) == (1, 1)
    assert await parked(db, unknown) == 1
    assert await outbox_count(db, [known, unknown]) == events == 2  # created, status_changed
    assert (await post(client, "gocardless", body, scheme.sign(b"wrong", body)))[0] == 401
    assert await count(db, known) == (1, 1)


async def test_gocardless_batch_with_a_bad_event_is_refused_and_its_retry_records_once(
    client: Any, db: asyncpg.Pool
) -> None:
    scheme = build_scheme("gocardless", {})
    assert isinstance(scheme, HexBodyScheme)
    known = ref("PM")
    status, _, _ = await post_webhook(client, payment_doc(known, status="pending"))
    assert status == 201
    broken = gc_event(known, "confirmed", iso(-5))
    broken["links"] = {}  # a payments event naming no payment
    body = gocardless_webhook(gc_event(known, "confirmed", iso(-10)), broken)
    status, answer = await post(client, "gocardless", body, scheme.sign(KEY, body))
    assert status == 422 and answer["event_index"] == 1  # not a 2xx: GoCardless retries
    row = await payment(db, known)
    assert row is not None and row["status"] == "succeeded"  # the good event is committed
    status, _ = await post(client, "gocardless", body, scheme.sign(KEY, body))
    assert status == 422
    assert await count(db, known) == (1, 1)
