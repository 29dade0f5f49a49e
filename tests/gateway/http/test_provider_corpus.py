"""A corpus of realistic deliveries per preset, through the real app and Postgres.

Each delivery is in the provider's documented shape: identifiers at the longest length
the provider documents for the fields a preset maps to `loan_account_number` and `cif`,
amounts in minor units of currencies whose exponents differ between providers, several
items in one notification, non-ASCII text and fractional-second timestamps. Where the
provider's Python SDK can sign (Adyen, Paddle) it signs; where it can only verify
(Stripe, Square, Razorpay, GoCardless) it verifies what is sent. Every payment must be
recorded with the amount and currency the provider meant, on the day it sent.
"""

from __future__ import annotations

import random
import string
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import Adyen.util as adyen_sdk
import asyncpg
import gocardless_pro.webhooks as gocardless_sdk
import orjson
import pytest
import razorpay
import stripe
from aiohttp.test_utils import TestClient
from paddle_billing.Notifications import Secret, Verifier
from paddle_billing.Notifications.PaddleSignature import PaddleSignature
from square.utils.webhooks_helper import verify_signature as square_verify

from gateway.db.event_log import queued_events_sql
from gateway.ingest.schemes import paypal, square
from gateway.ingest.schemes.hmac_hex import HexBodyScheme
from gateway.ingest.schemes.registry import build_scheme
from gateway.ingest.signatures import sign
from tests.conftest import make_settings
from tests.gateway.http.ops_helpers import get as ops_get
from tests.gateway.http.test_provider_webhooks import certs  # noqa: F401 - a fixture
from tests.paypal_ca import CertServer, private_ca
from tests.webhooks import payment_doc, post_webhook

ADYEN_HEX = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
SECRET = "provider-secret-0001"
KEY = SECRET.encode()
STRIPE_SECRET = "whsec_corpus_0001"
PADDLE_SECRET = "pdl_ntfset_01hv8wwh0zc2y2b0d0j1x0j0x0_corpus"
SQUARE_URL = "https://pay.example.com/api/v1/payments/webhook/square"
PAYPAL_WEBHOOK_ID = "8PT597110X687430LKGECATA"
# Days in the provider's own calendar, a few days back (inside every window).
DAY = (datetime.now(UTC) - timedelta(days=3)).date()


def ident(prefix: str, length: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    """An identifier of exactly `length` characters, random after the prefix."""
    return prefix + "".join(random.choices(alphabet, k=length - len(prefix)))


def text(length: int) -> str:
    """Exactly `length` characters of non-ASCII text (up to 4 UTF-8 bytes each)."""
    words = "Zoë-Müller/Ñandú·Þórður·東京·Łódź·€·😀-"
    return (words * (length // len(words) + 1))[:length]


@pytest.fixture
async def client(
    make_client: Any,
    stack: Any,
    tmp_path: Path,
    certs: CertServer,  # noqa: F811
) -> TestClient[Any, Any]:
    host, ca_file = certs.host, certs.ca_file
    path = tmp_path / "channels.toml"
    path.write_text(f"""
[channels.stripe]
preset = "stripe"
secrets = ["{STRIPE_SECRET}"]
[channels.adyen]
preset = "adyen"
secrets = ["{ADYEN_HEX}"]
[channels.checkout]
preset = "checkout"
secrets = ["{SECRET}"]
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
secrets = ["{PADDLE_SECRET}"]
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
    return c


async def post(
    client: TestClient[Any, Any], channel: str, body: bytes, headers: dict[str, str]
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", **headers}
    resp = await client.post(f"/api/v1/payments/webhook/{channel}", data=body, headers=headers)
    raw = await resp.text()
    try:
        return resp.status, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return resp.status, raw


async def recorded(db: asyncpg.Pool, reference: str) -> dict[str, Any]:
    row = await db.fetchrow(
        "SELECT amount::text AS amount, currency, loan_account_number, cif, payment_date,"
        " payment_at, status FROM payment_service.payments WHERE reference_number = $1",
        reference,
    )
    assert row is not None, f"{reference} was not recorded"
    return dict(row)


async def event_payment(db: asyncpg.Pool, reference: str) -> dict[str, Any]:
    payload = await db.fetchval(
        f"SELECT payload FROM ({queued_events_sql()}) e"
        " WHERE key = $1 AND event_type = 'payment.recorded'",
        reference,
    )
    return dict(orjson.loads(payload)["payment"])


# -- The three deliveries of issue 32, as they were reported ------------------------------


async def test_the_reported_deliveries_are_recorded_as_the_providers_meant(
    client: Any, db: asyncpg.Pool
) -> None:
    upper = string.ascii_uppercase + string.digits
    psp = ident("", 16, upper)
    item = adyen_item(psp, 150000, "CLP", merchantReference="LA-7",
                      additionalData={"shopperReference": "CIF-7"})  # fmt: skip
    body = orjson.dumps({"notificationItems": [{"NotificationRequestItem": item}]})
    assert await post(client, "adyen", body, {}) == (200, "[accepted]")

    pay = ident("pay_", 30, string.ascii_lowercase + string.digits)
    body = checkout_event(pay, 5000, "ISK", "ORD-1", customer="CIF-7")
    headers = build_scheme("checkout", {}).sign(KEY, body)  # type: ignore[attr-defined]
    assert (await post(client, "checkout", body, headers))[0] == 201

    square_id, customer = ident("", 29), "JDKYHBWT1D4F8MFH63DBMEN8Y4"  # 26 characters
    body = square_event(square_id, customer, "LA-7", {"amount": 2599, "currency": "USD"})
    status, answer = await post(client, "square", body, square.sign(KEY, SQUARE_URL, body))
    assert status == 201, answer

    amounts = {
        r["reference_number"]: (r["amount"], r["cif"])
        for r in await db.fetch(
            "SELECT reference_number, amount::text AS amount, cif FROM payment_service.payments"
        )
    }
    assert amounts == {
        psp: ("1500.00", "CIF-7"),  # was 150000.00: Stripe's table said CLP has no decimals
        pay: ("5000.00", "CIF-7"),  # was 50.00: Checkout.com sends ISK in full
        square_id: ("25.99", customer),  # was a 422: "cif longer than 20 characters"
    }


# -- Adyen: signed by Adyen's SDK (generate_notification_sig) ----------------------------


def adyen_item(psp: str, value: int, currency: str, **over: Any) -> dict[str, Any]:
    item = {
        "additionalData": {"shopperReference": ident("shopper-", 256)},  # 3..256 characters
        "amount": {"currency": currency, "value": value},
        "eventCode": "AUTHORISATION",
        "eventDate": f"{DAY}T23:30:00+01:00",
        "merchantAccountCode": "ÉcoleDeMusiqueECOM",
        "merchantReference": text(80),  # Adyen: at most 80 characters
        "operations": ["CANCEL", "CAPTURE", "REFUND"],
        "paymentMethod": "visa",
        "pspReference": psp,  # always 16 characters
        "reason": "033899:1111:03/2030",
        "success": "true",
    }
    item.update(over)
    signature = adyen_sdk.generate_notification_sig(item, ADYEN_HEX).decode()
    item["additionalData"] = {**item["additionalData"], "hmacSignature": signature}
    assert adyen_sdk.is_valid_hmac_notification(item, ADYEN_HEX)
    return item


async def test_adyen_notification_of_several_currencies(client: Any, db: asyncpg.Pool) -> None:
    upper = string.ascii_uppercase + string.digits
    clp, kwd, jpy, idr = (ident("", 16, upper) for _ in range(4))
    items = [
        adyen_item(clp, 150000, "CLP"),  # the issue: Adyen gives CLP two decimals
        adyen_item(kwd, 12345, "KWD"),
        adyen_item(jpy, 5000, "JPY"),
        adyen_item(idr, 1500000, "IDR"),  # ISO gives IDR two decimals, Adyen none
        adyen_item(ident("", 16, upper), 0, "EUR", eventCode="REPORT_AVAILABLE"),
    ]
    body = orjson.dumps(
        {"live": "false", "notificationItems": [{"NotificationRequestItem": i} for i in items]}
    )
    assert await post(client, "adyen", body, {}) == (200, "[accepted]")
    expected = {clp: ("1500.00", "CLP"), kwd: ("12.345", "KWD"), jpy: ("5000.00", "JPY"),
                idr: ("1500000.00", "IDR")}  # fmt: skip
    for psp, (amount, currency) in expected.items():
        row = await recorded(db, psp)
        assert (row["amount"], row["currency"]) == (amount, currency)
        assert row["loan_account_number"] == text(80)
        assert len(row["cif"]) == 256
        assert row["payment_date"] == datetime.combine(DAY, datetime.min.time()).replace(
            hour=23, minute=30
        )  # the provider's day, not the UTC one
    event = await event_payment(db, kwd)
    assert (event["amount"], event["currency"]) == ("12.345", "KWD")
    assert event["payment_date"] == f"{DAY}T22:30:00Z"  # the instant, as on the topic before

    unknown = orjson.dumps(
        {"notificationItems": [{"NotificationRequestItem": adyen_item(clp[::-1], 100, "XTS")}]}
    )
    status, answer = await post(client, "adyen", unknown, {})
    assert status == 422 and "unknown currency XTS" in answer["detail"]
    assert await db.fetchval(
        "SELECT count(*) FROM payment_service.payments WHERE reference_number = $1", clp[::-1]
    ) == 0  # fmt: skip


# -- Checkout.com: no SDK verifier; the documented HMAC is the signature ------------------


def checkout_event(
    pay: str, amount: int, currency: str, reference: str, customer: str | None = None
) -> bytes:
    return orjson.dumps(
        {
            "id": ident("evt_", 30, string.ascii_lowercase + string.digits),
            "type": "payment_captured",
            "version": "1.0.33",
            "created_on": f"{DAY}T10:15:30.5810967Z",  # seven fractional digits
            "data": {
                "id": pay,
                "action_id": ident("act_", 30, string.ascii_lowercase + string.digits),
                "amount": amount,
                "currency": currency,
                "reference": reference,
                "customer": {"id": customer or ident("cus_", 30), "name": "Sigríður Jónsdóttir"},
                "metadata": {"note": "Kærar þakkir fyrir"},
                "processed_on": f"{DAY}T10:15:29.1234567Z",
                "response_code": "10000",
            },
        }
    )


async def test_checkout_full_value_and_thousandths(client: Any, db: asyncpg.Pool) -> None:
    scheme = build_scheme("checkout", {})
    assert isinstance(scheme, HexBodyScheme)
    cases = {
        ident("pay_", 30, string.ascii_lowercase + string.digits): (5000, "ISK", "5000.00"),
        ident("pay_", 30, string.ascii_lowercase + string.digits): (1230, "BHD", "1.23"),
        ident("pay_", 30, string.ascii_lowercase + string.digits): (12345, "KWD", "12.345"),
    }
    for pay, (amount, currency, _) in cases.items():
        body = checkout_event(pay, amount, currency, text(80))
        status, answer = await post(client, "checkout", body, scheme.sign(KEY, body))
        assert (status, answer["status"]) == (201, "created"), answer
    for pay, (_, currency, meant) in cases.items():
        row = await recorded(db, pay)
        assert (row["amount"], row["currency"], row["loan_account_number"]) == (
            meant, currency, text(80)
        )  # fmt: skip
        assert row["cif"].startswith("cus_") and len(row["cif"]) == 30


# -- Square: Square's SDK verifies each signature ---------------------------------------


def square_event(payment_id: str, customer: str, reference: str, money: dict[str, Any]) -> bytes:
    payment = {
        "id": payment_id,
        "created_at": f"{DAY}T13:47:31.123Z",
        "updated_at": f"{DAY}T13:47:33.456Z",
        "amount_money": money,
        "status": "COMPLETED",
        "source_type": "CARD",
        "location_id": "L88917AVBK2S5",
        "order_id": ident("", 29),
        "reference_id": reference,  # Square: at most 40 characters
        "customer_id": customer,  # Square: up to 191 characters
        "note": "Café com pão — obrigado",
        "version": 3,
    }
    return orjson.dumps(
        {
            "merchant_id": "6SSW7HV8K2ST5",
            "type": "payment.updated",
            "event_id": str(uuid.uuid4()),
            "created_at": f"{DAY}T13:47:34.789Z",
            "data": {"type": "payment", "id": payment_id, "object": {"payment": payment}},
        }
    )


async def test_square_payments_with_customers_are_recorded(client: Any, db: asyncpg.Pool) -> None:
    # The case: a customer id of Square's usual 26 characters; then the longest
    # documented ones, a yen amount, and non-ASCII text in the reference.
    cases = {
        ident("", 29): (ident("", 26, string.ascii_uppercase + string.digits), "LA-7",
                        {"amount": 2599, "currency": "USD"}, "25.99"),
        ident("", 29): (ident("", 191), text(40), {"amount": 5000, "currency": "JPY"}, "5000.00"),
    }  # fmt: skip
    for pid, (customer, reference, money, _) in cases.items():
        body = square_event(pid, customer, reference, money)
        headers = square.sign(KEY, SQUARE_URL, body)
        assert square_verify(
            request_body=body.decode(), signature_header=headers[square.HEADER],
            signature_key=SECRET, notification_url=SQUARE_URL,
        )  # fmt: skip
        status, answer = await post(client, "square", body, headers)
        assert (status, answer["status"]) == (201, "created"), answer
    for pid, (customer, reference, money, meant) in cases.items():
        row = await recorded(db, pid)
        assert (row["amount"], row["currency"]) == (meant, money["currency"])
        assert (row["cif"], row["loan_account_number"]) == (customer, reference)
        # An operator finds the payment by the customer id Square sent, whatever its length.
        status, page = await ops_get(client, "/api/v1/payments", cif=customer)
        assert (status, [p["reference_number"] for p in page["items"]]) == (200, [pid]), page


# -- Razorpay: the SDK's verify_webhook_signature checks each delivery -------------------


def razorpay_event(pay: str, amount: int, currency: str) -> bytes:
    notes = {"loan_account_number": text(256), "cif": ident("cif-", 256)}  # 256 each at most
    entity = {
        "id": pay,
        "entity": "payment",
        "amount": amount,
        "currency": currency,
        "status": "captured",
        "order_id": ident("order_", 20),
        "international": currency != "INR",
        "method": "card",
        "description": "Abonnement annuel — été",
        "notes": notes,
        "created_at": int(datetime.combine(DAY, datetime.min.time(), UTC).timestamp()) + 3600,
    }
    return orjson.dumps(
        {
            "entity": "event",
            "account_id": "acc_BFQ7uQEaa7j2z7",
            "event": "payment.captured",
            "contains": ["payment"],
            "payload": {"payment": {"entity": entity}},
            "created_at": int(time.time()),
        }
    )


async def test_razorpay_paise_zero_and_three_decimal_currencies(
    client: Any, db: asyncpg.Pool
) -> None:
    scheme = build_scheme("razorpay", {})
    assert isinstance(scheme, HexBodyScheme)
    sdk = razorpay.Client(auth=("rzp_test_key", "secret")).utility
    cases = {
        ident("pay_", 18): (50000, "INR", "500.00"),
        ident("pay_", 18): (295, "JPY", "295.00"),
        ident("pay_", 18): (99990, "KWD", "99.99"),  # Razorpay: the last digit is 0
        ident("pay_", 18): (12345, "OMR", "12.345"),
        ident("pay_", 18): (5000, "ISK", "5000.00"),  # no decimals at Razorpay
    }
    for pay, (amount, currency, _) in cases.items():
        body = razorpay_event(pay, amount, currency)
        headers = scheme.sign(KEY, body, delivery_id=ident("evt_", 18))
        assert sdk.verify_webhook_signature(body.decode(), headers["X-Razorpay-Signature"], SECRET)
        status, answer = await post(client, "razorpay", body, headers)
        assert (status, answer["status"]) == (201, "created"), answer
    for pay, (_, currency, meant) in cases.items():
        row = await recorded(db, pay)
        assert (row["amount"], row["currency"]) == (meant, currency)
        assert (len(row["loan_account_number"]), len(row["cif"])) == (256, 256)


# -- Paddle: signed with the SDK's own HMAC, checked by its Verifier ----------------------


def paddle_event(txn: str, total: str, currency: str) -> bytes:
    return orjson.dumps(
        {
            "event_id": ident("evt_", 30, string.ascii_lowercase + string.digits),
            "event_type": "transaction.completed",
            "occurred_at": f"{DAY}T09:00:01.654321Z",
            "notification_id": ident("ntf_", 30, string.ascii_lowercase + string.digits),
            "data": {
                "id": txn,
                "status": "completed",
                "customer_id": ident("ctm_", 30, string.ascii_lowercase + string.digits),
                "currency_code": currency,
                "origin": "web",
                "custom_data": {"loan_account_number": text(500)},
                "created_at": f"{DAY}T08:59:58.123456Z",
                "billed_at": f"{DAY}T09:00:00.123456Z",
                "details": {"totals": {"subtotal": total, "tax": "0", "grand_total": total}},
            },
        }
    )


async def test_paddle_lowest_denominations(client: Any, db: asyncpg.Pool) -> None:
    cases = {
        ident("txn_", 30, string.ascii_lowercase + string.digits): ("5000", "JPY", "5000.00"),
        ident("txn_", 30, string.ascii_lowercase + string.digits): ("1150", "USD", "11.50"),
        ident("txn_", 30, string.ascii_lowercase + string.digits): ("990000", "CLP", "990000.00"),
    }
    for txn, (total, currency, _) in cases.items():
        body = paddle_event(txn, total, currency)
        now = int(time.time())
        digest = PaddleSignature.calculate_hmac(PADDLE_SECRET, f"{now}:".encode() + body)
        headers = {"Paddle-Signature": f"ts={now};h1={digest.hexdigest()}"}
        request = SimpleNamespace(headers=headers, body=body)
        assert Verifier().verify(request, Secret(PADDLE_SECRET)) is True
        status, answer = await post(client, "paddle", body, headers)
        assert (status, answer["status"]) == (201, "created"), answer
    for txn, (_, currency, meant) in cases.items():
        row = await recorded(db, txn)
        assert (row["amount"], row["currency"], row["loan_account_number"]) == (
            meant, currency, text(500)
        )  # fmt: skip
        assert row["cif"].startswith("ctm_")
        assert row["payment_date"] == datetime.combine(DAY, datetime.min.time()).replace(
            hour=9, microsecond=123456
        )


# -- PayPal: decimal strings; signed with the test certificate's key ----------------------


async def test_paypal_currencies_without_decimals(client: Any, db: asyncpg.Pool) -> None:
    ca = private_ca()
    url = f"https://{client.cert_host}/v1/notifications/certs/CERT-corpus"
    cases = {
        ident("", 17, string.ascii_uppercase + string.digits): ("5000", "JPY", "5000.00"),
        ident("", 17, string.ascii_uppercase + string.digits): ("1500", "HUF", "1500.00"),
        ident("", 17, string.ascii_uppercase + string.digits): ("10.99", "EUR", "10.99"),
    }
    for capture, (value, currency, _) in cases.items():
        body = orjson.dumps(
            {
                "id": ident("WH-", 40),
                "event_type": "PAYMENT.CAPTURE.COMPLETED",
                "create_time": f"{DAY}T12:00:00.123Z",
                "resource_type": "capture",
                "resource": {
                    "id": capture,
                    "status": "COMPLETED",
                    "amount": {"currency_code": currency, "value": value},
                    "invoice_id": text(127),  # PayPal: at most 127 characters each
                    "custom_id": ident("cif-", 127),
                    "create_time": f"{DAY}T11:59:58Z",
                    "update_time": f"{DAY}T11:59:59Z",
                },
            }
        )
        headers = paypal.sign(
            ca.signing_key, body, cert_url=url, webhook_id=PAYPAL_WEBHOOK_ID,
            transmission_id=str(uuid.uuid4()), now=int(time.time()),
        )  # fmt: skip
        status, answer = await post(client, "paypal", body, headers)
        assert (status, answer["status"]) == (201, "created"), answer
    for capture, (_, currency, meant) in cases.items():
        row = await recorded(db, capture)
        assert (row["amount"], row["currency"]) == (meant, currency)
        assert (row["loan_account_number"], len(row["cif"])) == (text(127), 127)


# -- Stripe: the SDK verifies the Stripe-Signature header --------------------------------


async def test_stripe_zero_decimal_and_special_cases(client: Any, db: asyncpg.Pool) -> None:
    created = int(datetime.combine(DAY, datetime.min.time(), UTC).timestamp()) + 7200
    cases = {
        ident("pi_", 27): (5000, "jpy", "JPY", "5000.00"),
        ident("pi_", 27): (5000, "isk", "ISK", "50.00"),  # Stripe still sends ISK with two
        ident("pi_", 27): (12340, "kwd", "KWD", "12.34"),
    }
    for pi, (amount, currency, _, _) in cases.items():
        body = orjson.dumps(
            {
                "id": ident("evt_", 28),
                "object": "event",
                "type": "payment_intent.succeeded",
                "created": created + 5,
                "data": {
                    "object": {
                        "id": pi,
                        "object": "payment_intent",
                        "amount": amount,
                        "currency": currency,
                        "created": created,
                        "description": "Réservation n° 42 — Zürich",
                        # Stripe: metadata values of up to 500 characters
                        "metadata": {"loan_account_number": text(500), "cif": ident("c", 500)},
                    }
                },
            }
        )
        headers = sign("stripe", STRIPE_SECRET.encode(), body, now=int(time.time()))
        stripe.WebhookSignature.verify_header(
            body.decode(), headers["Stripe-Signature"], STRIPE_SECRET, 300
        )
        status, answer = await post(client, "stripe", body, headers)
        assert (status, answer["status"]) == (201, "created"), answer
    for pi, (_, _, currency, meant) in cases.items():
        row = await recorded(db, pi)
        assert (row["amount"], row["currency"]) == (meant, currency)
        assert (row["loan_account_number"], len(row["cif"])) == (text(500), 500)


# -- GoCardless: the SDK's parse verifies the batch; events are status changes ------------


async def test_gocardless_batch_moves_a_payment_recorded_elsewhere(
    client: Any, db: asyncpg.Pool
) -> None:
    scheme = build_scheme("gocardless", {})
    assert isinstance(scheme, HexBodyScheme)
    payment_id = ident("PM", 14, string.ascii_uppercase + string.digits)
    status, _, _ = await post_webhook(client, payment_doc(payment_id, status="pending"))
    assert status == 201
    events = [
        {
            "id": ident("EV", 14, string.ascii_uppercase + string.digits),
            "created_at": f"{DAY}T{hour}:00:00.{hour}1Z",
            "resource_type": "payments",
            "action": action,
            "links": {"payment": payment_id},
            "details": {"origin": "gocardless", "description": "Paiement confirmé — merci"},
        }
        for hour, action in (("10", "submitted"), ("11", "confirmed"))
    ]
    body = orjson.dumps({"events": events, "meta": {"webhook_id": ident("WB", 14)}})
    headers = scheme.sign(KEY, body)
    parsed = gocardless_sdk.parse(body, SECRET, headers["Webhook-Signature"])
    assert [e.action for e in parsed] == ["submitted", "confirmed"]
    status, answer = await post(client, "gocardless", body, headers)
    assert status == 200 and [e["status"] for e in answer["events"]] == ["duplicate", "updated"]
    assert (await recorded(db, payment_id))["status"] == "succeeded"
