"""PayPal: no shared secret. PayPal signs, with the private key of a certificate it
publishes, the string

    <PAYPAL-TRANSMISSION-ID>|<PAYPAL-TRANSMISSION-TIME>|<webhook id>|<CRC-32 of the body>

(the CRC as an unsigned decimal), RSA PKCS#1 v1.5 with SHA-256 (`PAYPAL-AUTH-ALGO:
SHA256withRSA`), base64 in `PAYPAL-TRANSMISSION-SIG`; `PAYPAL-CERT-URL` names the
certificate. The webhook id is the one PayPal assigned to our listener URL
(`[verify] webhook_id`), so a delivery meant for another listener fails.

The certificate URL must be https on one of PayPal's API hosts, under
/v1/notifications/certs/ (`[verify] cert_hosts` replaces the host list; tests point
it at a local server); the certificate must chain to a trusted CA and be issued to
paypal.com (gateway.ingest.schemes.paypal_certs). The transmission time is checked
first; on a cache miss verify() raises KeyFetchRequired: the handler fetches (bounded:
paypal_certs), then verifies again. Nothing falls back to unverified: no certificate,
no pass.

The body enters the signature only through its CRC-32, which is not a cryptographic
hash: someone who saw a genuine delivery could build another body with the same CRC.
The transmission time is checked against the channel's tolerance and the transmission
id is the replay guard's delivery id, which bounds that to a few minutes on another
instance; docs/security.md says so.
"""

from __future__ import annotations

import base64
import binascii
import ssl
import zlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from gateway.errors import ConfigError
from gateway.ingest.schemes.paypal_certs import (
    PAYPAL_CERT_HOSTS,
    CertificateCache,
    check_url,
    load_anchors,
)
from gateway.ingest.signatures import (
    KeyFetchRequired,
    SignatureError,
    Verified,
    _check_tolerance,
    _header,
)

ALGORITHM = "SHA256withRSA"
_MAX_SIG_CHARS = 1024
_MAX_ID_CHARS = 255


def _get(headers: Mapping[str, str], name: str) -> str | None:
    value = _header(headers, name, name.lower())
    return value.strip() if value and value.strip() else None


def _transmission_time(raw: str) -> int:
    if len(raw) > 64:
        raise SignatureError("malformed_timestamp", "PAYPAL-TRANSMISSION-TIME is too long")
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise SignatureError(
            "malformed_timestamp", "PAYPAL-TRANSMISSION-TIME is not an ISO 8601 time"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def signed_message(transmission_id: str, time: str, webhook_id: str, body: bytes) -> bytes:
    crc = zlib.crc32(body) & 0xFFFFFFFF
    return f"{transmission_id}|{time}|{webhook_id}|{crc}".encode()


class PayPalScheme:
    name = "paypal"

    def __init__(
        self, webhook_id: str, cert_hosts: Sequence[str], certificates: CertificateCache
    ) -> None:
        self.webhook_id = webhook_id
        self.cert_hosts = frozenset(h.lower() for h in cert_hosts)
        self.certificates = certificates

    def verify(
        self,
        headers: Mapping[str, str],
        body: bytes,
        keys: Sequence[bytes],
        *,
        now: float,
        tolerance: int,
    ) -> Verified:
        transmission_id = _get(headers, "PAYPAL-TRANSMISSION-ID")
        signature = _get(headers, "PAYPAL-TRANSMISSION-SIG")
        cert_url = _get(headers, "PAYPAL-CERT-URL")
        if not transmission_id or not signature or not cert_url:
            raise SignatureError(
                "missing_signature",
                "PAYPAL-TRANSMISSION-ID, PAYPAL-TRANSMISSION-SIG and PAYPAL-CERT-URL are required",
            )
        raw_time = _get(headers, "PAYPAL-TRANSMISSION-TIME")
        if raw_time is None:
            raise SignatureError("missing_timestamp", "PAYPAL-TRANSMISSION-TIME is missing")
        algorithm = _get(headers, "PAYPAL-AUTH-ALGO")
        if algorithm != ALGORITHM:
            raise SignatureError("unsupported_version", f"only {ALGORITHM} is accepted")
        if len(transmission_id) > _MAX_ID_CHARS or len(signature) > _MAX_SIG_CHARS:
            raise SignatureError("malformed_signature", "a PayPal signature header is too long")
        timestamp = _transmission_time(raw_time)
        # Before anything is fetched: a stale or future time costs nobody a download.
        _check_tolerance(timestamp, now, tolerance)
        url = check_url(cert_url, self.cert_hosts)
        try:
            raw_sig = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise SignatureError(
                "malformed_signature", "PAYPAL-TRANSMISSION-SIG is not base64"
            ) from None

        key = self.certificates.get(url, datetime.now(UTC))
        if key is None:
            raise KeyFetchRequired(lambda: self.certificates.fetch(url))
        message = signed_message(transmission_id, raw_time, self.webhook_id, body)
        try:
            key.verify(raw_sig, message, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise SignatureError(
                "signature_mismatch", "the signature does not verify for this webhook id"
            ) from None
        return Verified(delivery_id=transmission_id, timestamp=timestamp)


def build(options: Mapping[str, Any], fail: Callable[[str, str], ConfigError]) -> PayPalScheme:
    unknown = set(options) - {"webhook_id", "cert_hosts", "ca_file"}
    if unknown:
        raise fail(f"verify.{sorted(unknown)[0]}", "unknown option for scheme 'paypal'")
    webhook_id = options.get("webhook_id")
    if not isinstance(webhook_id, str) or not webhook_id.strip():
        raise fail("verify.webhook_id", "PayPal signs the webhook id: set the id of this listener")
    hosts = options.get("cert_hosts", list(PAYPAL_CERT_HOSTS))
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) for h in hosts):
        raise fail("verify.cert_hosts", "expected a list of host or host:port strings")
    ca_file = options.get("ca_file")
    if ca_file is not None and not isinstance(ca_file, str):
        raise fail("verify.ca_file", "expected a path")
    try:
        anchors = load_anchors(ca_file)
    except ConfigError as exc:
        raise fail("verify.ca_file", str(exc)) from None
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    return PayPalScheme(webhook_id.strip(), hosts, CertificateCache(anchors, ssl_context=context))


def sign(
    private_key: RSAPrivateKey,
    body: bytes,
    *,
    cert_url: str,
    webhook_id: str,
    transmission_id: str,
    now: int,
) -> dict[str, str]:
    """The headers PayPal would send, signed with a test certificate's key (tests, bench)."""
    time = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    message = signed_message(transmission_id, time, webhook_id, body)
    signature = private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return {
        "PAYPAL-TRANSMISSION-ID": transmission_id,
        "PAYPAL-TRANSMISSION-TIME": time,
        "PAYPAL-TRANSMISSION-SIG": base64.b64encode(signature).decode("ascii"),
        "PAYPAL-CERT-URL": cert_url,
        "PAYPAL-AUTH-ALGO": ALGORITHM,
    }
