"""PayPal's certificate-based check, offline: our own CA stands in for PayPal's, the
certificate cache is fed the PEM a PAYPAL-CERT-URL would serve."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from gateway.errors import ConfigError
from gateway.ingest.schemes import paypal
from gateway.ingest.schemes.paypal_certs import CertificateCache, check_url, trusted_key
from gateway.ingest.schemes.registry import build_scheme
from gateway.ingest.signatures import KeyFetchRequired, SignatureError
from tests.paypal_ca import pem, private_ca

NOW = int(time.time())
WEBHOOK_ID = "8PT597110X687430LKGECATA"
CERT_URL = "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-1d93a270"
BODY = b'{"id":"WH-1","event_type":"PAYMENT.CAPTURE.COMPLETED"}'


@pytest.fixture
def ca_file(tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    path.write_bytes(pem(private_ca().root))
    return str(path)


@pytest.fixture
def scheme(ca_file: str) -> paypal.PayPalScheme:
    built = build_scheme("paypal", {"webhook_id": WEBHOOK_ID, "ca_file": ca_file})
    assert isinstance(built, paypal.PayPalScheme)
    built.certificates.add(CERT_URL, pem(private_ca().signing))
    return built


def headers(**over: Any) -> dict[str, str]:
    out = paypal.sign(private_ca().signing_key, BODY, cert_url=CERT_URL, webhook_id=WEBHOOK_ID,
                      transmission_id="69cd13f0-d67a-11e5-baa3-778b53f4ae55", now=NOW)  # fmt: skip
    out.update(over)
    return out


def reason(scheme: paypal.PayPalScheme, hdrs: dict[str, str], body: bytes = BODY) -> str:
    with pytest.raises(SignatureError) as info:
        scheme.verify(hdrs, body, [], now=NOW, tolerance=300)
    return info.value.reason


def test_signed_message_is_the_documented_concatenation() -> None:
    crc = zlib.crc32(BODY) & 0xFFFFFFFF
    assert paypal.signed_message("tid", "2026-01-01T00:00:00Z", "WH", BODY) == (
        f"tid|2026-01-01T00:00:00Z|WH|{crc}".encode()
    )


def test_a_delivery_signed_with_the_certificate_verifies(scheme: paypal.PayPalScheme) -> None:
    verified = scheme.verify(headers(), BODY, [], now=NOW, tolerance=300)
    assert verified.delivery_id == "69cd13f0-d67a-11e5-baa3-778b53f4ae55"
    assert verified.timestamp == NOW
    # Independently: the signature is RSA PKCS#1 v1.5 / SHA-256 over the message.
    hdrs = headers()
    private_ca().signing.public_key().verify(  # type: ignore[call-arg, union-attr]
        __import__("base64").b64decode(hdrs["PAYPAL-TRANSMISSION-SIG"]),
        paypal.signed_message(hdrs["PAYPAL-TRANSMISSION-ID"], hdrs["PAYPAL-TRANSMISSION-TIME"],
                              WEBHOOK_ID, BODY),
        padding.PKCS1v15(), hashes.SHA256(),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda h: h.pop("PAYPAL-TRANSMISSION-SIG"), "missing_signature"),
        (lambda h: h.pop("PAYPAL-TRANSMISSION-TIME"), "missing_timestamp"),
        (lambda h: h.update({"PAYPAL-TRANSMISSION-TIME": "yesterday"}), "malformed_timestamp"),
        (lambda h: h.update({"PAYPAL-AUTH-ALGO": "SHA1withRSA"}), "unsupported_version"),
        (lambda h: h.update({"PAYPAL-TRANSMISSION-SIG": "!!!"}), "malformed_signature"),
        (lambda h: h.update({"PAYPAL-TRANSMISSION-ID": "other"}), "signature_mismatch"),
        (lambda h: h.update({"PAYPAL-CERT-URL": "http://api.paypal.com/v1/notifications/certs/X"}),
         "untrusted_certificate"),
        (lambda h: h.update({"PAYPAL-CERT-URL": "https://evil.example/v1/notifications/certs/X"}),
         "untrusted_certificate"),
        (lambda h: h.update({"PAYPAL-CERT-URL": "https://api.paypal.com.evil.example/v1/notifications/certs/X"}),
         "untrusted_certificate"),
        (lambda h: h.update({"PAYPAL-CERT-URL": "https://api.paypal.com/other/X"}),
         "untrusted_certificate"),
        (lambda h: h.update({"PAYPAL-CERT-URL": "https://u@api.paypal.com/v1/notifications/certs/X"}),
         "untrusted_certificate"),
    ],
)  # fmt: skip
def test_forged_or_malformed_deliveries_fail(
    scheme: paypal.PayPalScheme, change: Callable[[dict[str, str]], Any], expected: str
) -> None:
    hdrs = headers()
    change(hdrs)
    assert reason(scheme, hdrs) == expected


def test_the_body_and_the_webhook_id_are_signed(scheme: paypal.PayPalScheme, ca_file: str) -> None:
    assert reason(scheme, headers(), BODY + b" ") == "signature_mismatch"
    other = build_scheme("paypal", {"webhook_id": "OTHERWEBHOOK", "ca_file": ca_file})
    assert isinstance(other, paypal.PayPalScheme)
    other.certificates.add(CERT_URL, pem(private_ca().signing))
    assert reason(other, headers()) == "signature_mismatch"


def test_a_stale_transmission_fails_before_the_certificate_is_needed(ca_file: str) -> None:
    fresh = build_scheme("paypal", {"webhook_id": WEBHOOK_ID, "ca_file": ca_file})
    with pytest.raises(SignatureError) as info:  # not KeyFetchRequired: nothing to fetch
        fresh.verify(headers(), BODY, [], now=NOW + 301, tolerance=300)
    assert info.value.reason == "timestamp_out_of_tolerance"


def test_a_stale_transmission_fails_with_a_cached_certificate(
    scheme: paypal.PayPalScheme,
) -> None:
    with pytest.raises(SignatureError) as info:
        scheme.verify(headers(), BODY, [], now=NOW + 301, tolerance=300)
    assert info.value.reason == "timestamp_out_of_tolerance"


def test_an_unknown_certificate_url_asks_for_a_fetch_never_passes(ca_file: str) -> None:
    fresh = build_scheme("paypal", {"webhook_id": WEBHOOK_ID, "ca_file": ca_file})
    with pytest.raises(KeyFetchRequired):
        fresh.verify(headers(), BODY, [], now=NOW, tolerance=300)


def test_certificates_that_are_not_trusted_are_refused() -> None:
    ca, now = private_ca(), datetime.now(UTC)
    anchors = [ca.root]
    impostor, _ = ca.issue_signing("messageverificationcerts.paypal.example")
    with pytest.raises(SignatureError, match=r"paypal\.com"):
        trusted_key(pem(impostor), anchors, now)
    expired, _ = ca.issue_signing(
        "messageverificationcerts.paypal.com", start=now - timedelta(days=40), days=10
    )
    with pytest.raises(SignatureError, match="expired"):
        trusted_key(pem(expired), anchors, now)
    with pytest.raises(SignatureError, match="trusted CA"):
        trusted_key(pem(ca.signing), [], now)  # no anchor: the root is not trusted
    with pytest.raises(SignatureError, match="PEM"):
        trusted_key(b"not a certificate", anchors, now)
    _, expires = trusted_key(pem(ca.signing, ca.root), anchors, now)
    assert expires == ca.signing.not_valid_after_utc


def test_cache_forgets_an_expired_certificate() -> None:
    ca = private_ca()
    cache = CertificateCache([ca.root])
    cache.add(CERT_URL, pem(ca.signing))
    assert cache.get(CERT_URL, datetime.now(UTC)) is not None
    assert cache.get(CERT_URL, ca.signing.not_valid_after_utc + timedelta(seconds=1)) is None


def test_cert_hosts_default_to_paypal_and_may_name_a_port() -> None:
    default = frozenset(h for h in paypal.PAYPAL_CERT_HOSTS)
    check_url("https://api-m.sandbox.paypal.com/v1/notifications/certs/CERT-1", default)
    check_url("https://api.paypal.com:443/v1/notifications/certs/CERT-1", default)
    with pytest.raises(SignatureError):
        check_url("https://api.paypal.com:8443/v1/notifications/certs/CERT-1", default)
    check_url("https://127.0.0.1:8443/v1/notifications/certs/C", frozenset({"127.0.0.1:8443"}))


@pytest.mark.parametrize(
    "spelled",
    [
        "https://api.paypal.com/v1/notifications/certs/CERT-1",
        "HTTPS://API.PayPal.com/v1/notifications/certs/CERT-1",
        "https://api.paypal.com:443/v1/notifications/certs/CERT-1",
        "https://api.paypal.com/v1/notifications/certs/CERT-1?",
        "https://api.paypal.com/v1/notifications/certs/CERT-1#",
        "https://api.paypal.com/v1/notifications/certs/CERT-1?#",
    ],
)
def test_spellings_of_a_certificate_url_have_one_canonical_form(spelled: str) -> None:
    hosts = frozenset(paypal.PAYPAL_CERT_HOSTS)
    assert check_url(spelled, hosts) == "https://api.paypal.com/v1/notifications/certs/CERT-1"


@pytest.mark.parametrize(
    "url",
    [
        "https://api.paypal.com/v1/notifications/certs/%43ERT-1",
        "https://api.paypal.com/v1/notifications/certs//CERT-1",
        "https://api.paypal.com/v1/notifications/certs/CERT-1?x=1",
        "https://api.paypal.com/v1/notifications/certs/CERT 1",
    ],
)
def test_other_spellings_are_refused(url: str) -> None:
    with pytest.raises(SignatureError):
        check_url(url, frozenset(paypal.PAYPAL_CERT_HOSTS))


def test_paypal_needs_its_webhook_id() -> None:
    with pytest.raises(ConfigError, match="webhook_id"):
        build_scheme("paypal", {})
    with pytest.raises(ConfigError, match="unknown option"):
        build_scheme("paypal", {"webhook_id": "X", "fallback": "unverified"})
