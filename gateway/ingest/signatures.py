"""Webhook signature schemes, verified on the raw body bytes before any parsing.

Why this module is strict:

* A digest is compared with `hmac.compare_digest` only after its decoded length
  equals the digest size, so a prefix of a valid signature can never pass
  (CVE-2024-21491 in Svix accepted one).
* A channel may hold several secrets at once (rotation) and a header may carry
  several signatures; any valid pair passes, nothing else does.
* Every failure raises `SignatureError` with a machine-readable `reason`; there
  is no path that returns "unverified", and an unknown scheme name is rejected
  when the configuration is loaded (`channels.py`), never at request time.
* The signature is checked before the timestamp, so `timestamp_out_of_tolerance`
  is only reported for a genuinely signed but stale (replayed or skewed) message,
  which is what an operator needs to tell clock skew from forgery.

=========  ==========================================  ==============================
scheme     headers                                     HMAC-SHA256 over / key
=========  ==========================================  ==============================
standard   webhook-id, webhook-timestamp,              `{id}.{timestamp}.` + body /
           webhook-signature (`v1,<base64>` entries,   base64 of the secret (after an
           space-separated)                            optional `whsec_`)
stripe     Stripe-Signature: t=<unix>,v1=<hex>,...     `{t}.` + body / secret as UTF-8
github     X-Hub-Signature-256: sha256=<hex>           body / secret as UTF-8
shopify    X-Shopify-Hmac-Sha256: <base64>             body / secret as UTF-8
=========  ==========================================  ==============================
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from multidict import CIMultiDict, CIMultiDictProxy

from gateway.errors import ConfigError, Unauthorized

DIGEST_SIZE = 32  # SHA-256
_HEX_LEN = 2 * DIGEST_SIZE
_B64_LEN = 44  # base64 of 32 bytes, padded
_MAX_TIMESTAMP_DIGITS = 12
# Above this size the body is fed to HMAC incrementally instead of being copied
# behind the signed prefix.
_CONCAT_LIMIT = 16 * 1024

_CASE_INSENSITIVE = (CIMultiDictProxy, CIMultiDict)

REASONS = frozenset(
    {
        "missing_signature",
        "malformed_signature",
        "signature_mismatch",
        "missing_timestamp",
        "malformed_timestamp",
        "timestamp_out_of_tolerance",
        "unsupported_version",
        "no_secret_configured",
        "untrusted_certificate",
        "authorization_mismatch",
    }
)


class SignatureError(Unauthorized):
    """The delivery is not authentic (401). `reason` says why, for metrics and the provider.

    The detail names headers and rules only: never a secret or an expected digest.
    """

    code = "invalid_signature"

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown signature failure reason {reason!r}")
        super().__init__(detail or reason.replace("_", " "), reason=reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Verified:
    delivery_id: str | None  # provider's delivery id header; None when the scheme has none
    timestamp: int | None  # the signed timestamp, where the scheme signs one
    # False when the id travels beside the signature (GitHub, Shopify, Razorpay): anyone
    # holding one signed body can send it with any id, so the id is kept for the record
    # but never used as a key (replay guard, parked updates).
    delivery_id_signed: bool = True


class Scheme(Protocol):
    name: str

    def verify(
        self,
        headers: Mapping[str, str],
        body: bytes,
        keys: Sequence[bytes],
        *,
        now: float,
        tolerance: int,
    ) -> Verified: ...


def _header(headers: Mapping[str, str], name: str, lower: str) -> str | None:
    """Case-insensitive lookup that stays O(1) for aiohttp's CIMultiDictProxy."""
    value = headers.get(name)
    if value is not None:
        return value
    if isinstance(headers, _CASE_INSENSITIVE):
        return None
    value = headers.get(lower)
    if value is not None:
        return value
    for key, item in headers.items():
        if isinstance(key, str) and key.lower() == lower:
            return item
    return None


def _mac(key: bytes, prefix: bytes, body: bytes) -> bytes:
    if len(body) <= _CONCAT_LIMIT:
        return hmac.digest(key, prefix + body, "sha256")
    mac = hmac.new(key, prefix, hashlib.sha256)
    mac.update(body)
    return mac.digest()


def _any_match(keys: Sequence[bytes], prefix: bytes, body: bytes, candidates: list[bytes]) -> bool:
    for key in keys:
        expected = _mac(key, prefix, body)
        for candidate in candidates:
            # Candidates were length-checked when decoded; compare_digest is the
            # constant-time part, the length check is what stops prefixes.
            if len(candidate) == DIGEST_SIZE and hmac.compare_digest(expected, candidate):
                return True
    return False


def _b64_digest(text: str) -> bytes | None:
    if len(text) != _B64_LEN or not text.isascii():
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == DIGEST_SIZE else None


def _hex_digest(text: str) -> bytes | None:
    # bytes.fromhex skips whitespace, so the exact length is checked on the text first.
    if len(text) != _HEX_LEN or not text.isascii():
        return None
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return None
    return raw if len(raw) == DIGEST_SIZE else None


def _timestamp(raw: str | None) -> tuple[int, str]:
    """The timestamp as a number and as the exact text that was signed."""
    if raw is None or not raw.strip():
        raise SignatureError("missing_timestamp", "the signed timestamp is missing")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > _MAX_TIMESTAMP_DIGITS:
        raise SignatureError("malformed_timestamp", "the timestamp must be integer unix seconds")
    return int(raw), raw


def _check_v1(
    keys: Sequence[bytes],
    prefix: bytes,
    body: bytes,
    candidates: list[bytes],
    seen_v1: bool,
    header: str,
) -> None:
    """The `v1` signatures of a header: some must be well formed, and one must match."""
    if not candidates:
        if seen_v1:
            raise SignatureError("malformed_signature", "no well-formed v1 signature")
        raise SignatureError("unsupported_version", f"no v1 signature in {header}")
    if not _any_match(keys, prefix, body, candidates):
        raise SignatureError("signature_mismatch", "no signature matches an active secret")


def _check_tolerance(timestamp: int, now: float, tolerance: int) -> None:
    if abs(now - timestamp) > tolerance:
        raise SignatureError(
            "timestamp_out_of_tolerance",
            f"the signed timestamp is more than {tolerance} s away from the server clock",
        )


def _ascii(text: str, what: str) -> bytes:
    try:
        # surrogateescape round-trips header bytes aiohttp could not decode as UTF-8.
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise SignatureError("malformed_signature", f"{what} is not encodable") from None


def _signature_header(headers: Mapping[str, str], name: str, lower: str) -> str:
    """The signature header as sent; missing_signature when it is absent or blank."""
    value = _header(headers, name, lower)
    if not value or not value.strip():
        raise SignatureError("missing_signature", f"the {name} header is missing")
    return value


def _require_keys(keys: Sequence[bytes]) -> None:
    if not keys:
        raise SignatureError("no_secret_configured", "no webhook secret is configured")


class StandardScheme:
    """Standard Webhooks (standardwebhooks.com), also what Svix sends."""

    name = "standard"

    def verify(
        self,
        headers: Mapping[str, str],
        body: bytes,
        keys: Sequence[bytes],
        *,
        now: float,
        tolerance: int,
    ) -> Verified:
        _require_keys(keys)
        signature = _signature_header(headers, "webhook-signature", "webhook-signature")
        msg_id = _header(headers, "webhook-id", "webhook-id")
        if not msg_id:
            raise SignatureError("missing_signature", "the webhook-id header is missing")
        timestamp, raw_ts = _timestamp(_header(headers, "webhook-timestamp", "webhook-timestamp"))

        candidates: list[bytes] = []
        seen_v1 = False
        for entry in signature.split():
            version, _, value = entry.partition(",")
            if version != "v1":
                continue
            seen_v1 = True
            digest = _b64_digest(value)
            if digest is not None:
                candidates.append(digest)
        prefix = b"%s.%s." % (_ascii(msg_id, "webhook-id"), _ascii(raw_ts, "webhook-timestamp"))
        _check_v1(keys, prefix, body, candidates, seen_v1, "webhook-signature")
        _check_tolerance(timestamp, now, tolerance)
        return Verified(delivery_id=msg_id, timestamp=timestamp)

    def sign(self, key: bytes, body: bytes, *, now: int, delivery_id: str) -> dict[str, str]:
        ts = str(now)
        digest = _mac(key, f"{delivery_id}.{ts}.".encode(), body)
        return {
            "webhook-id": delivery_id,
            "webhook-timestamp": ts,
            "webhook-signature": "v1," + base64.b64encode(digest).decode("ascii"),
        }


class StripeScheme:
    """Stripe's `Stripe-Signature`; other schemes in the header (v0, ...) are ignored."""

    name = "stripe"

    def verify(
        self,
        headers: Mapping[str, str],
        body: bytes,
        keys: Sequence[bytes],
        *,
        now: float,
        tolerance: int,
    ) -> Verified:
        _require_keys(keys)
        header = _signature_header(headers, "Stripe-Signature", "stripe-signature")

        ts_field: str | None = None
        candidates: list[bytes] = []
        seen_v1 = False
        for item in header.split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, value = item.partition("=")
            if not sep:
                raise SignatureError("malformed_signature", "Stripe-Signature is not key=value")
            if name == "t":
                if ts_field is not None:
                    raise SignatureError("malformed_timestamp", "Stripe-Signature repeats t=")
                ts_field = value
            elif name == "v1":
                seen_v1 = True
                digest = _hex_digest(value)
                if digest is not None:
                    candidates.append(digest)
        timestamp, raw_ts = _timestamp(ts_field)
        _check_v1(
            keys, raw_ts.encode("ascii") + b".", body, candidates, seen_v1, "Stripe-Signature"
        )
        _check_tolerance(timestamp, now, tolerance)
        return Verified(delivery_id=None, timestamp=timestamp)

    def sign(self, key: bytes, body: bytes, *, now: int, delivery_id: str) -> dict[str, str]:
        digest = _mac(key, f"{now}.".encode(), body)
        return {"Stripe-Signature": f"t={now},v1={digest.hex()}"}


class GitHubScheme:
    """GitHub's `X-Hub-Signature-256`; it signs no timestamp, so replay protection
    rests on the delivery id and reference deduplication."""

    name = "github"

    def verify(
        self,
        headers: Mapping[str, str],
        body: bytes,
        keys: Sequence[bytes],
        *,
        now: float,
        tolerance: int,
    ) -> Verified:
        _require_keys(keys)
        header = _signature_header(headers, "X-Hub-Signature-256", "x-hub-signature-256")
        algorithm, sep, value = header.strip().partition("=")
        if not sep:
            raise SignatureError("malformed_signature", "expected sha256=<hex>")
        if algorithm != "sha256":
            raise SignatureError("unsupported_version", "only sha256= signatures are accepted")
        digest = _hex_digest(value)
        if digest is None:
            raise SignatureError("malformed_signature", "expected 64 hex digits after sha256=")
        if not _any_match(keys, b"", body, [digest]):
            raise SignatureError("signature_mismatch", "no signature matches an active secret")
        delivery = _header(headers, "X-GitHub-Delivery", "x-github-delivery")
        return Verified(delivery_id=delivery or None, timestamp=None, delivery_id_signed=False)

    def sign(self, key: bytes, body: bytes, *, now: int, delivery_id: str) -> dict[str, str]:
        digest = _mac(key, b"", body)
        return {"X-Hub-Signature-256": "sha256=" + digest.hex(), "X-GitHub-Delivery": delivery_id}


class ShopifyScheme:
    """Shopify's `X-Shopify-Hmac-Sha256`; like GitHub it signs no timestamp."""

    name = "shopify"

    def verify(
        self,
        headers: Mapping[str, str],
        body: bytes,
        keys: Sequence[bytes],
        *,
        now: float,
        tolerance: int,
    ) -> Verified:
        _require_keys(keys)
        header = _signature_header(headers, "X-Shopify-Hmac-Sha256", "x-shopify-hmac-sha256")
        digest = _b64_digest(header.strip())
        if digest is None:
            raise SignatureError("malformed_signature", "expected the base64 of a SHA-256 HMAC")
        if not _any_match(keys, b"", body, [digest]):
            raise SignatureError("signature_mismatch", "no signature matches an active secret")
        delivery = _header(headers, "X-Shopify-Webhook-Id", "x-shopify-webhook-id")
        return Verified(delivery_id=delivery or None, timestamp=None, delivery_id_signed=False)

    def sign(self, key: bytes, body: bytes, *, now: int, delivery_id: str) -> dict[str, str]:
        digest = _mac(key, b"", body)
        return {
            "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode("ascii"),
            "X-Shopify-Webhook-Id": delivery_id,
        }


_IMPLS: dict[str, StandardScheme | StripeScheme | GitHubScheme | ShopifyScheme] = {
    impl.name: impl for impl in (StandardScheme(), StripeScheme(), GitHubScheme(), ShopifyScheme())
}
SCHEMES: dict[str, Scheme] = dict(_IMPLS)


def get_scheme(name: str) -> Scheme:
    """The scheme called `name`; ConfigError (at load time) for an unknown one."""
    scheme = SCHEMES.get(name)
    if scheme is None:
        raise ConfigError(
            f"unknown signature scheme {name!r}: expected one of {', '.join(sorted(SCHEMES))}"
        )
    return scheme


def decode_secret(scheme: str, secret: str) -> bytes:
    """The HMAC key for a configured secret string.

    Standard Webhooks secrets are base64, optionally behind `whsec_` (padding may be
    omitted, as the reference library allows). Stripe's `whsec_...` is NOT decoded:
    Stripe uses the whole string as the key. Errors never quote the secret.
    """
    get_scheme(scheme)
    secret = secret.strip()
    if not secret:
        raise ConfigError(f"an empty secret was configured for scheme {scheme!r}")
    if scheme != "standard":
        return secret.encode("utf-8")
    text = secret.removeprefix("whsec_")
    text += "=" * (-len(text) % 4)
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(
            "a secret for scheme 'standard' is not base64 (optionally prefixed whsec_)"
        ) from None
    if not key:
        raise ConfigError("a secret for scheme 'standard' decodes to an empty key")
    return key


def sign(
    scheme: str, key: bytes, body: bytes, *, now: int, delivery_id: str = "msg_test"
) -> dict[str, str]:
    """Headers that make `body` verify under `scheme` with `key` (tests, bench, docs)."""
    get_scheme(scheme)
    return _IMPLS[scheme].sign(key, body, now=int(now), delivery_id=delivery_id)


class KeyFetchRequired(Exception):
    """Raised by a scheme's verify() when the key it needs must be fetched first (PayPal's
    certificate): the caller awaits `fetch()` and verifies again. Never a pass."""

    def __init__(self, fetch: Callable[[], Awaitable[None]]) -> None:
        super().__init__("a verification key must be fetched")
        self.fetch = fetch
