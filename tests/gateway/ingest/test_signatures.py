"""Signature schemes: interoperability with the providers' own libraries,
published known-answer vectors, and the attacks the verifier must refuse."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

import pytest
import standardwebhooks
import stripe
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.errors import ConfigError, Unauthorized
from gateway.ingest.signatures import (
    SCHEMES,
    SignatureError,
    Verified,
    decode_secret,
    get_scheme,
    sign,
)

NOW = 1_700_000_000
BODY = b'{"reference_number":"REF-1","amount":"10.50","cif":"C1"}'
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PLAIN_SECRET = "s3cr3t-plain"
SECRET_FOR = {
    "standard": STANDARD_SECRET,
    "stripe": "whsec_test_stripe_secret",
    "github": "It's a Secret to Everybody",
    "shopify": "shpss_0123456789abcdef",
}


def key_for(scheme: str) -> bytes:
    return decode_secret(scheme, SECRET_FOR[scheme])


def verify(
    scheme: str,
    headers: dict[str, str] | CIMultiDictProxy[str],
    body: bytes = BODY,
    keys: list[bytes] | None = None,
    *,
    now: float = NOW,
    tolerance: int = 300,
) -> Verified:
    return SCHEMES[scheme].verify(
        headers, body, [key_for(scheme)] if keys is None else keys, now=now, tolerance=tolerance
    )


def reason_of(scheme: str, headers: dict[str, str], body: bytes = BODY, **kw: object) -> str:
    with pytest.raises(SignatureError) as info:
        verify(scheme, headers, body, **kw)  # type: ignore[arg-type]
    return info.value.reason


ALL = sorted(SCHEMES)
SIGNATURE_HEADER = {
    "standard": "webhook-signature",
    "stripe": "Stripe-Signature",
    "github": "X-Hub-Signature-256",
    "shopify": "X-Shopify-Hmac-Sha256",
}


# -- interoperability and known answers ----------------------------------------


def test_standardwebhooks_library_signature_verifies() -> None:
    lib = standardwebhooks.Webhook(STANDARD_SECRET)
    signature = lib.sign("msg_abc", datetime.fromtimestamp(NOW, UTC), BODY.decode())
    headers = {
        "webhook-id": "msg_abc",
        "webhook-timestamp": str(NOW),
        "webhook-signature": signature,
    }

    assert verify("standard", headers) == Verified(delivery_id="msg_abc", timestamp=NOW)


def test_our_standard_signature_verifies_with_the_library() -> None:
    # The library checks the timestamp against the real clock: sign at "now".
    real_now = int(datetime.now(UTC).timestamp())
    headers = sign("standard", key_for("standard"), BODY, now=real_now, delivery_id="msg_xyz")

    assert standardwebhooks.Webhook(STANDARD_SECRET).verify(BODY, headers) == {
        "reference_number": "REF-1",
        "amount": "10.50",
        "cif": "C1",
    }


def test_standard_webhooks_published_vector() -> None:
    # The vector the Standard Webhooks / Svix libraries test against.
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    body = b'{"test": 2432232314}'

    result = verify("standard", headers, body, now=1614265330)

    assert result == Verified(delivery_id="msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp=1614265330)


def test_stripe_library_header_verifies() -> None:
    secret = SECRET_FOR["stripe"]
    header = stripe.WebhookSignature.generate_signature_header(BODY.decode(), secret, NOW)

    assert verify("stripe", {"Stripe-Signature": header}) == Verified(None, NOW)


def test_our_stripe_header_is_accepted_by_construct_event() -> None:
    body = b'{"id": "evt_1", "object": "event", "type": "payment_intent.succeeded"}'
    real_now = int(datetime.now(UTC).timestamp())
    headers = sign("stripe", key_for("stripe"), body, now=real_now)

    event = stripe.Webhook.construct_event(
        body, headers["Stripe-Signature"], SECRET_FOR["stripe"], api_key="sk_test_unused"
    )

    assert event["id"] == "evt_1"


def test_stripe_key_is_the_whole_secret_string_not_base64() -> None:
    assert decode_secret("stripe", "whsec_abc") == b"whsec_abc"


def test_github_published_vector() -> None:
    # GitHub's documentation example for X-Hub-Signature-256.
    headers = {
        "X-Hub-Signature-256": (
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        ),
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    }

    result = verify("github", headers, b"Hello, World!")

    assert result == Verified("72d3162e-cc78-11e3-81ab-4c9367dc0958", None, False)


def test_github_hand_computed() -> None:
    expected = hmac.new(b"It's a Secret to Everybody", BODY, hashlib.sha256).hexdigest()

    assert verify("github", {"X-Hub-Signature-256": f"sha256={expected}"}).delivery_id is None


def test_shopify_hand_computed() -> None:
    digest = hmac.new(b"shpss_0123456789abcdef", BODY, hashlib.sha256).digest()
    headers = {
        "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
        "X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
    }

    assert verify("shopify", headers) == Verified(
        "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043", None, False
    )


def test_shopify_known_answer() -> None:
    # Computed once with `openssl dgst -sha256 -hmac hush -binary | base64`.
    headers = {"X-Shopify-Hmac-Sha256": "D0UMXmhjwBRi4y66TmhJrDlhQABD7zI2fm3p6/QLMo8="}
    body = b'{"id":820982911946154508,"email":"jon@example.com"}'

    assert verify("shopify", headers, body, [b"hush"]).delivery_id is None


@pytest.mark.parametrize("scheme", ALL)
def test_sign_round_trips_and_lookup_is_case_insensitive(scheme: str) -> None:
    headers = sign(scheme, key_for(scheme), BODY, now=NOW, delivery_id="d-1")
    lower = {k.lower(): v for k, v in headers.items()}
    upper = {k.upper(): v for k, v in headers.items()}
    proxy = CIMultiDictProxy(CIMultiDict(upper))

    results = {verify(scheme, h) for h in (headers, lower, upper, proxy)}

    assert len(results) == 1
    expected_id = None if scheme == "stripe" else "d-1"
    assert results.pop().delivery_id == expected_id


# -- attacks and malformed input -------------------------------------------------


@pytest.mark.parametrize("scheme", ALL)
def test_every_prefix_of_a_valid_signature_fails(scheme: str) -> None:
    headers = sign(scheme, key_for(scheme), BODY, now=NOW)
    name = SIGNATURE_HEADER[scheme]
    full = headers[name]

    for cut in range(len(full)):
        forged = {**headers, name: full[:cut]}
        with pytest.raises(SignatureError):
            verify(scheme, forged)


@pytest.mark.parametrize("scheme", ALL)
def test_wrong_signature_is_a_mismatch(scheme: str) -> None:
    headers = sign(scheme, b"another channel's secret", BODY, now=NOW)

    assert reason_of(scheme, headers) == "signature_mismatch"


@pytest.mark.parametrize("scheme", ALL)
def test_signature_for_another_body_fails(scheme: str) -> None:
    headers = sign(scheme, key_for(scheme), BODY + b" ", now=NOW)

    assert reason_of(scheme, headers) == "signature_mismatch"


@pytest.mark.parametrize("scheme", ALL)
def test_empty_headers_are_missing_signature(scheme: str) -> None:
    assert reason_of(scheme, {}) == "missing_signature"


@pytest.mark.parametrize("scheme", ALL)
def test_no_secret_configured_never_passes(scheme: str) -> None:
    headers = sign(scheme, key_for(scheme), BODY, now=NOW)

    assert reason_of(scheme, headers, keys=[]) == "no_secret_configured"


@pytest.mark.parametrize("scheme", ALL)
def test_rotation_any_active_secret_passes(scheme: str) -> None:
    old, new = b"old-secret-0001", b"new-secret-0002"
    headers = sign(scheme, new, BODY, now=NOW)

    verify(scheme, headers, keys=[old, new])
    assert reason_of(scheme, headers, keys=[old]) == "signature_mismatch"


@pytest.mark.parametrize("scheme", ALL)
def test_invalid_utf8_body_is_refused_not_crashed(scheme: str) -> None:
    headers = sign(scheme, key_for(scheme), BODY, now=NOW)

    assert reason_of(scheme, headers, b"\xff\xfe\x80 not utf-8") == "signature_mismatch"


@pytest.mark.parametrize("scheme", ALL)
def test_invalid_utf8_body_signed_correctly_verifies(scheme: str) -> None:
    body = b"\xff\xfe\x80 binary"
    verify(scheme, sign(scheme, key_for(scheme), body, now=NOW), body)


def test_one_valid_among_several_standard_signatures_passes() -> None:
    good = sign("standard", key_for("standard"), BODY, now=NOW)
    bogus = "v1," + base64.b64encode(b"\x00" * 32).decode()
    headers = {**good, "webhook-signature": f"v1a,xyz {bogus} {good['webhook-signature']} v2,abc"}

    assert verify("standard", headers).delivery_id == "msg_test"


def test_one_valid_among_several_stripe_signatures_passes() -> None:
    good = sign("stripe", key_for("stripe"), BODY, now=NOW)["Stripe-Signature"]
    t, v1 = good.split(",")
    header = f"{t},v1={'0' * 64},v0=deadbeef,{v1}"

    assert verify("stripe", {"Stripe-Signature": header}).timestamp == NOW


def test_standard_only_other_versions_is_unsupported() -> None:
    good = sign("standard", key_for("standard"), BODY, now=NOW)
    sig = good["webhook-signature"].removeprefix("v1,")

    assert reason_of("standard", {**good, "webhook-signature": f"v2,{sig}"}) == (
        "unsupported_version"
    )
    assert reason_of("standard", {**good, "webhook-signature": "v1a,abc"}) == (
        "unsupported_version"
    )


def test_stripe_only_v0_is_unsupported() -> None:
    good = sign("stripe", key_for("stripe"), BODY, now=NOW)["Stripe-Signature"]
    header = good.replace("v1=", "v0=")

    assert reason_of("stripe", {"Stripe-Signature": header}) == "unsupported_version"


def test_github_sha1_is_unsupported() -> None:
    digest = hmac.new(key_for("github"), BODY, hashlib.sha1).hexdigest()

    assert reason_of("github", {"X-Hub-Signature-256": f"sha1={digest}"}) == ("unsupported_version")


@pytest.mark.parametrize(
    ("scheme", "value"),
    [
        ("standard", "v1,not base64!!"),
        ("standard", "v1," + base64.b64encode(b"\x01" * 31).decode()),
        ("standard", "v1," + base64.b64encode(b"\x01" * 33).decode()),
        ("stripe", f"t={NOW},v1=zz{'0' * 62}"),
        ("stripe", f"t={NOW},v1={'0' * 66}"),
        ("stripe", f"t={NOW},garbage"),
        ("github", "0" * 64),
        ("github", "sha256=" + "g" * 64),
        ("github", "sha256=" + "ab " * 21 + "a"),
        ("shopify", "****"),
        ("shopify", base64.b64encode(b"\x01" * 32).decode().rstrip("=")),
    ],
)
def test_malformed_signatures(scheme: str, value: str) -> None:
    headers = sign(scheme, key_for(scheme), BODY, now=NOW)
    headers[SIGNATURE_HEADER[scheme]] = value

    assert reason_of(scheme, headers) == "malformed_signature"


def test_hex_signature_with_embedded_whitespace_is_not_accepted() -> None:
    digest = hmac.new(key_for("github"), BODY, hashlib.sha256).hexdigest()
    spaced = digest[:10] + " " + digest[10:63]  # same length, bytes.fromhex would skip the space

    assert reason_of("github", {"X-Hub-Signature-256": f"sha256={spaced}"}) == (
        "malformed_signature"
    )


@pytest.mark.parametrize("scheme", ["standard", "stripe"])
@pytest.mark.parametrize(
    ("offset", "passes"),
    [(-301, False), (-300, True), (0, True), (300, True), (301, False)],
)
def test_timestamp_tolerance_both_directions(scheme: str, offset: int, passes: bool) -> None:
    # Signed at NOW + offset, verified at NOW: negative = stale, positive = from the future.
    headers = sign(scheme, key_for(scheme), BODY, now=NOW + offset)

    if passes:
        assert verify(scheme, headers, tolerance=300).timestamp == NOW + offset
    else:
        assert reason_of(scheme, headers, tolerance=300) == "timestamp_out_of_tolerance"


def test_standard_timestamp_problems() -> None:
    good = sign("standard", key_for("standard"), BODY, now=NOW)
    no_ts = {k: v for k, v in good.items() if k != "webhook-timestamp"}

    assert reason_of("standard", no_ts) == "missing_timestamp"
    for bad in ("12.5", "-5", "soon", "\uff11\uff12\uff13", "9" * 40):
        assert reason_of("standard", {**good, "webhook-timestamp": bad}) == "malformed_timestamp"


def test_standard_missing_id_is_missing_signature() -> None:
    good = sign("standard", key_for("standard"), BODY, now=NOW)
    headers = {k: v for k, v in good.items() if k != "webhook-id"}

    assert reason_of("standard", headers) == "missing_signature"


def test_stripe_timestamp_problems() -> None:
    sig = sign("stripe", key_for("stripe"), BODY, now=NOW)["Stripe-Signature"].split(",")[1]

    assert reason_of("stripe", {"Stripe-Signature": sig}) == "missing_timestamp"
    assert reason_of("stripe", {"Stripe-Signature": f"t=abc,{sig}"}) == "malformed_timestamp"
    assert reason_of("stripe", {"Stripe-Signature": f"t={NOW},t={NOW},{sig}"}) == (
        "malformed_timestamp"
    )


def test_timestamp_is_part_of_the_signed_content() -> None:
    good = sign("standard", key_for("standard"), BODY, now=NOW)

    assert reason_of("standard", {**good, "webhook-timestamp": str(NOW + 1)}) == (
        "signature_mismatch"
    )
    assert reason_of("standard", {**good, "webhook-id": "msg_other"}) == "signature_mismatch"


def test_undecodable_header_text_is_refused_not_crashed() -> None:
    good = sign("standard", key_for("standard"), BODY, now=NOW)
    # aiohttp hands undecodable header bytes over as surrogate escapes.
    weird_id = b"msg_\xff".decode("utf-8", "surrogateescape")

    assert reason_of("standard", {**good, "webhook-id": weird_id}) == "signature_mismatch"
    assert reason_of("standard", {**good, "webhook-id": "msg_\ud800"}) == "malformed_signature"
    assert reason_of("standard", {**good, "webhook-signature": "v1,\udcff" * 3}) == (
        "malformed_signature"
    )


def test_error_body_names_the_reason_and_no_secret() -> None:
    headers = sign("stripe", b"wrong", BODY, now=NOW)
    with pytest.raises(SignatureError) as info:
        verify("stripe", headers)
    err = info.value

    assert isinstance(err, Unauthorized)
    assert err.status == 401
    body = err.body()
    assert body["error"] == "invalid_signature"
    assert body["reason"] == "signature_mismatch"
    expected = hmac.new(key_for("stripe"), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    rendered = repr(body)
    assert SECRET_FOR["stripe"] not in rendered
    assert expected not in rendered


# -- secrets and configuration ------------------------------------------------


def test_decode_secret_standard_forms() -> None:
    raw = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")

    assert decode_secret("standard", STANDARD_SECRET) == raw
    assert decode_secret("standard", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") == raw
    assert decode_secret("standard", "whsec_" + base64.b64encode(b"abcd").decode().rstrip("=")) == (
        b"abcd"
    )


@pytest.mark.parametrize("secret", ["whsec_!!not-base64!!", "whsec_", "   "])
def test_decode_secret_standard_rejects_without_quoting(secret: str) -> None:
    with pytest.raises(ConfigError) as info:
        decode_secret("standard", secret)

    if secret.strip():
        assert secret not in str(info.value)


def test_decode_secret_other_schemes_use_utf8() -> None:
    assert decode_secret("github", PLAIN_SECRET) == PLAIN_SECRET.encode()
    assert decode_secret("shopify", "ключ") == "ключ".encode()


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown signature scheme"):
        get_scheme("none")
    with pytest.raises(ConfigError):
        decode_secret("hmac-lol", "x")
    with pytest.raises(ConfigError):
        sign("unsigned", b"k", BODY, now=NOW)


# -- properties ------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(scheme=st.sampled_from(ALL), body=st.binary(max_size=512), key=st.binary(min_size=1))
def test_property_round_trip(scheme: str, body: bytes, key: bytes) -> None:
    headers = sign(scheme, key, body, now=NOW)

    assert isinstance(SCHEMES[scheme].verify(headers, body, [key], now=NOW, tolerance=5), Verified)


@settings(max_examples=60, deadline=None)
@given(
    scheme=st.sampled_from(ALL),
    body=st.binary(min_size=1, max_size=256),
    data=st.data(),
)
def test_property_any_single_byte_mutation_fails(
    scheme: str, body: bytes, data: st.DataObject
) -> None:
    key = b"property-key"
    headers = sign(scheme, key, body, now=NOW)
    index = data.draw(st.integers(0, len(body) - 1))
    delta = data.draw(st.integers(1, 255))
    mutated = body[:index] + bytes([(body[index] + delta) % 256]) + body[index + 1 :]

    with pytest.raises(SignatureError) as info:
        SCHEMES[scheme].verify(headers, mutated, [key], now=NOW, tolerance=5)
    assert info.value.reason == "signature_mismatch"
