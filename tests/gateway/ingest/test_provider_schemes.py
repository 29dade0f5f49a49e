"""Provider signature schemes: our verifier accepts what the provider's own SDK signs or
accepts, the SDK accepts what our test signer makes, and forgeries fail closed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from types import SimpleNamespace
from typing import Any

import Adyen.util as adyen_util
import gocardless_pro.webhooks as gocardless_webhooks
import orjson
import pytest
import razorpay
from gocardless_pro.errors import InvalidSignatureError
from paddle_billing.Notifications import Secret, Verifier
from paddle_billing.Notifications.PaddleSignature import PaddleSignature
from square.utils.webhooks_helper import verify_signature as square_verify

from gateway.errors import ConfigError
from gateway.ingest.schemes import adyen, hmac_hex, paddle, square
from gateway.ingest.schemes.registry import build_scheme, decode_key, scheme_names
from gateway.ingest.signatures import Scheme, SignatureError, Verified

NOW = int(time.time())
ADYEN_KEY_HEX = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
ADYEN_KEY = decode_key("adyen", ADYEN_KEY_HEX)
SQUARE_URL = "https://pay.example.com/api/v1/payments/webhook/square"
SECRET = "whsec-provider-test-0123456789"
KEY = SECRET.encode()


def adyen_item(**over: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "eventCode": "AUTHORISATION",
        "success": "true",
        "pspReference": "7914073381342284",
        "merchantAccountCode": "TestMerchant",
        "merchantReference": "TestPayment-1407325143704",
        "amount": {"value": 1130, "currency": "EUR"},
        "eventDate": "2026-01-01T10:00:00+01:00",
        "additionalData": {},
    }
    item.update(over)
    return item


def reason(scheme: Scheme, headers: dict[str, str], body: bytes, keys: list[bytes]) -> str:
    with pytest.raises(SignatureError) as info:
        scheme.verify(headers, body, keys, now=NOW, tolerance=300)
    return info.value.reason


def test_every_provider_scheme_is_registered() -> None:
    assert set(scheme_names()) >= {
        "adyen", "square", "razorpay", "paddle", "checkout", "paypal", "gocardless",
    }  # fmt: skip


# -- Adyen ------------------------------------------------------------------------------


def test_adyen_sdk_signature_verifies_with_our_scheme() -> None:
    item = adyen_item()
    signature = adyen_util.generate_notification_sig(item, ADYEN_KEY_HEX).decode()
    item["additionalData"] = {"hmacSignature": signature}
    body = orjson.dumps({"live": "false", "notificationItems": [{"NotificationRequestItem": item}]})

    assert adyen.AdyenScheme().verify({}, body, [ADYEN_KEY], now=NOW, tolerance=300) == Verified(
        None, None
    )


def test_our_adyen_signature_verifies_with_the_sdk() -> None:
    body = adyen.notification(ADYEN_KEY, [adyen_item(), adyen_item(pspReference="2")])
    doc = orjson.loads(body)

    for wrapper in doc["notificationItems"]:
        assert adyen_util.is_valid_hmac_notification(
            wrapper["NotificationRequestItem"], ADYEN_KEY_HEX
        )


def test_adyen_every_item_must_verify() -> None:
    good = adyen.sign_item(ADYEN_KEY, adyen_item())
    forged = adyen.sign_item(ADYEN_KEY, adyen_item(pspReference="9"))
    forged["amount"] = {"value": 999999, "currency": "EUR"}  # changed after signing
    body = orjson.dumps(
        {
            "notificationItems": [
                {"NotificationRequestItem": good},
                {"NotificationRequestItem": forged},
            ]
        }
    )

    assert reason(adyen.AdyenScheme(), {}, body, [ADYEN_KEY]) == "signature_mismatch"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"not json", "missing_signature"),
        (b'{"notificationItems": []}', "missing_signature"),
        (orjson.dumps({"notificationItems": [{"NotificationRequestItem": adyen_item()}]}),
         "missing_signature"),
        (orjson.dumps({"notificationItems": [{"NotificationRequestItem": adyen_item(
            additionalData={"hmacSignature": "short"})}]}), "malformed_signature"),
        (orjson.dumps({"notificationItems": [{"other": 1}]}), "malformed_signature"),
    ],
)  # fmt: skip
def test_adyen_bodies_that_are_not_signed_notifications_fail(body: bytes, expected: str) -> None:
    assert reason(adyen.AdyenScheme(), {}, body, [ADYEN_KEY]) == expected


def test_adyen_key_rotation_and_wrong_key() -> None:
    body = adyen.notification(ADYEN_KEY, [adyen_item()])
    other = bytes(32)
    assert adyen.AdyenScheme().verify({}, body, [other, ADYEN_KEY], now=NOW, tolerance=1)
    assert reason(adyen.AdyenScheme(), {}, body, [other]) == "signature_mismatch"


def test_adyen_key_must_be_hex() -> None:
    with pytest.raises(ConfigError, match="hex"):
        decode_key("adyen", "not-hex")


# -- Square -----------------------------------------------------------------------------


def square_scheme(*urls: str) -> Scheme:
    return build_scheme("square", {"notification_url": list(urls) or SQUARE_URL})


def test_our_square_signature_verifies_with_the_sdk() -> None:
    body = b'{"event_id":"e-1","type":"payment.updated"}'
    header = square.sign(KEY, SQUARE_URL, body)[square.HEADER]

    assert square_verify(
        request_body=body.decode(), signature_header=header, signature_key=SECRET,
        notification_url=SQUARE_URL,
    )  # fmt: skip
    assert square_scheme().verify({square.HEADER: header}, body, [KEY], now=NOW, tolerance=1)


def test_square_signature_covers_the_notification_url() -> None:
    body = b'{"event_id":"e-1"}'
    headers = square.sign(KEY, "https://other.example/webhook", body)

    assert not square_verify(
        request_body=body.decode(), signature_header=headers[square.HEADER],
        signature_key=SECRET, notification_url=SQUARE_URL,
    )  # fmt: skip
    assert reason(square_scheme(), headers, body, [KEY]) == "signature_mismatch"
    # While a subscription moves, both URLs may be listed.
    both = square_scheme(SQUARE_URL, "https://other.example/webhook")
    assert both.verify(headers, body, [KEY], now=NOW, tolerance=1)


def test_square_needs_its_notification_url_configured() -> None:
    with pytest.raises(ConfigError, match="notification_url"):
        build_scheme("square", {})
    with pytest.raises(ConfigError, match="absolute"):
        build_scheme("square", {"notification_url": "/webhook/square"})


# -- Razorpay, Checkout.com, GoCardless -------------------------------------------------


def test_our_razorpay_signature_verifies_with_the_sdk() -> None:
    body = b'{"event":"payment.captured"}'
    scheme = build_scheme("razorpay", {})
    assert isinstance(scheme, hmac_hex.HexBodyScheme)
    headers = scheme.sign(KEY, body, delivery_id="evt_1")
    client = razorpay.Client(auth=("key_id", "key_secret"))

    assert client.utility.verify_webhook_signature(
        body.decode(), headers["X-Razorpay-Signature"], SECRET
    )
    assert scheme.verify(headers, body, [KEY], now=NOW, tolerance=1) == Verified(
        "evt_1", None, False
    )


def test_razorpay_sdk_refuses_what_we_refuse() -> None:
    body = b'{"event":"payment.captured"}'
    scheme = build_scheme("razorpay", {})
    assert isinstance(scheme, hmac_hex.HexBodyScheme)
    tampered = scheme.sign(KEY, body)
    with pytest.raises(razorpay.errors.SignatureVerificationError):
        razorpay.Client(auth=("k", "s")).utility.verify_webhook_signature(
            body.decode() + " ", tampered["X-Razorpay-Signature"], SECRET
        )
    assert reason(scheme, tampered, body + b" ", [KEY]) == "signature_mismatch"


def test_our_gocardless_signature_parses_with_the_sdk() -> None:
    body = orjson.dumps({"events": [{"id": "EV1", "action": "confirmed"}], "meta": {}})
    scheme = build_scheme("gocardless", {})
    assert isinstance(scheme, hmac_hex.HexBodyScheme)
    headers = scheme.sign(KEY, body)

    events = gocardless_webhooks.parse(body, SECRET, headers["Webhook-Signature"])
    assert [e.id for e in events] == ["EV1"]
    assert scheme.verify(headers, body, [KEY], now=NOW, tolerance=1)
    with pytest.raises(InvalidSignatureError):
        gocardless_webhooks.parse(body, "other-secret", headers["Webhook-Signature"])
    assert reason(scheme, headers, body, [b"other-secret"]) == "signature_mismatch"


def test_checkout_signature_is_the_hex_hmac_of_the_body() -> None:
    # Checkout.com publishes no verifier in its SDK: the documented rule is the oracle.
    body = b'{"id":"evt_1","type":"payment_captured"}'
    expected = hmac.new(KEY, body, hashlib.sha256).hexdigest()
    scheme = build_scheme("checkout", {})

    assert scheme.verify({"Cko-Signature": expected}, body, [KEY], now=NOW, tolerance=1)
    assert scheme.verify({"cko-signature": expected.upper()}, body, [KEY], now=NOW, tolerance=1)
    assert reason(scheme, {"Cko-Signature": expected[:-2]}, body, [KEY]) == "malformed_signature"
    assert reason(scheme, {}, body, [KEY]) == "missing_signature"


def test_checkout_authorization_key_is_required_when_configured() -> None:
    body = b'{"id":"evt_1"}'
    signed = {"Cko-Signature": hmac.new(KEY, body, hashlib.sha256).hexdigest()}
    scheme = build_scheme("checkout", {"authorization": "auth-key-1 auth-key-2"})

    assert scheme.verify({**signed, "Authorization": "auth-key-2"}, body, [KEY], now=NOW,
                         tolerance=1)  # fmt: skip
    assert reason(scheme, signed, body, [KEY]) == "authorization_mismatch"
    assert reason(scheme, {**signed, "Authorization": "auth-key"}, body, [KEY]) == (
        "authorization_mismatch"
    )
    with pytest.raises(ConfigError, match="unknown option"):
        build_scheme("razorpay", {"authorization": "x"})


# -- Paddle -----------------------------------------------------------------------------


def test_paddle_sdk_signature_verifies_with_our_scheme() -> None:
    body = b'{"event_id":"evt_1","event_type":"transaction.completed"}'
    digest = PaddleSignature.calculate_hmac(SECRET, f"{NOW}:".encode() + body).hexdigest()
    headers = {"Paddle-Signature": f"ts={NOW};h1={digest}"}

    assert build_scheme("paddle", {}).verify(headers, body, [KEY], now=NOW, tolerance=5) == (
        Verified(None, NOW)
    )


def test_our_paddle_signature_verifies_with_the_sdk() -> None:
    body = b'{"event_id":"evt_2","event_type":"transaction.paid"}'
    headers = paddle.sign(KEY, body, now=int(time.time()))
    request = SimpleNamespace(headers=headers, body=body)

    assert Verifier().verify(request, Secret(SECRET)) is True
    request.body = body + b" "
    assert Verifier().verify(request, Secret(SECRET)) is False


def test_paddle_stale_and_rotated_signatures() -> None:
    body = b"{}"
    scheme = build_scheme("paddle", {})
    old = paddle.sign(KEY, body, now=NOW - 301)
    assert reason(scheme, old, body, [KEY]) == "timestamp_out_of_tolerance"
    # Two h1 entries during a rotation: any one that matches passes.
    rotated = paddle.sign(b"old-secret", body, now=NOW)["Paddle-Signature"]
    current = paddle.sign(KEY, body, now=NOW)["Paddle-Signature"].split(";")[1]
    assert scheme.verify({"Paddle-Signature": f"{rotated};{current}"}, body, [KEY], now=NOW,
                         tolerance=5)  # fmt: skip
    assert reason(scheme, {"Paddle-Signature": f"h1={'0' * 64}"}, body, [KEY]) == (
        "missing_timestamp"
    )
    assert reason(scheme, {"Paddle-Signature": f"ts={NOW};h1=zz"}, body, [KEY]) == (
        "malformed_signature"
    )


def test_schemes_take_only_their_own_options() -> None:
    for name in ("adyen", "paddle", "stripe", "standard"):
        with pytest.raises(ConfigError, match="takes no options"):
            build_scheme(name, {"notification_url": SQUARE_URL})
    with pytest.raises(ConfigError, match="certificate"):
        decode_key("paypal", "anything")


def test_square_header_from_base64_of_digest_is_exactly_44_chars() -> None:
    header = square.sign(KEY, SQUARE_URL, b"{}")[square.HEADER]
    assert len(header) == 44 and base64.b64decode(header)
