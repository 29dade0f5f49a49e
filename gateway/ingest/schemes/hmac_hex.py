"""Providers that sign the body alone: the hex HMAC-SHA256 of the raw body, in one
header, under the webhook secret as UTF-8.

=============  =======================  ================================================
scheme         signature header         delivery id
=============  =======================  ================================================
razorpay       X-Razorpay-Signature     x-razorpay-event-id (header)
checkout       Cko-Signature            the event's `id` (body, through the preset)
gocardless     Webhook-Signature        each event's `id` (body, one webhook = a batch)
=============  =======================  ================================================

None of them signs a timestamp, so a replay is stopped by the delivery id and the
reference table, not by a clock. Checkout.com can also send a fixed key in
`Authorization` (its webhook "authorization header key"): with
`[verify] authorization_env` set, that header must equal one of the listed values
as well (compared as SHA-256 digests, so neither length nor content leaks by timing).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.errors import ConfigError
from gateway.ingest.signatures import (
    SignatureError,
    Verified,
    _any_match,
    _header,
    _hex_digest,
    _mac,
    _require_keys,
    _signature_header,
)


class HexBodyScheme:
    def __init__(
        self,
        name: str,
        header: str,
        delivery_header: str | None = None,
        authorization: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.header = header
        self.lower = header.lower()
        self.delivery_header = delivery_header
        self._authorization = tuple(hashlib.sha256(a.encode()).digest() for a in authorization)

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
        header = _signature_header(headers, self.header, self.lower)
        digest = _hex_digest(header.strip())
        if digest is None:
            raise SignatureError("malformed_signature", f"expected 64 hex digits in {self.header}")
        if not _any_match(keys, b"", body, [digest]):
            raise SignatureError("signature_mismatch", "no signature matches an active secret")
        if self._authorization:
            self._check_authorization(headers)
        delivery = None
        if self.delivery_header is not None:
            delivery = _header(headers, self.delivery_header, self.delivery_header.lower())
        return Verified(delivery_id=delivery or None, timestamp=None, delivery_id_signed=False)

    def _check_authorization(self, headers: Mapping[str, str]) -> None:
        given = _header(headers, "Authorization", "authorization")
        if not given:
            raise SignatureError("authorization_mismatch", "the Authorization header is missing")
        seen = hashlib.sha256(given.strip().encode("utf-8", "surrogateescape")).digest()
        # Every configured value is compared: no early exit to time.
        if not sum(hmac.compare_digest(seen, known) for known in self._authorization):
            raise SignatureError(
                "authorization_mismatch", "the Authorization header matches no configured key"
            )

    def sign(self, key: bytes, body: bytes, *, delivery_id: str | None = None) -> dict[str, str]:
        """The headers the provider would send for `body` (tests, bench)."""
        headers = {self.header: _mac(key, b"", body).hex()}
        if self.delivery_header and delivery_id:
            headers[self.delivery_header] = delivery_id
        return headers


RAZORPAY = ("razorpay", "X-Razorpay-Signature", "x-razorpay-event-id")
CHECKOUT = ("checkout", "Cko-Signature", None)
GOCARDLESS = ("gocardless", "Webhook-Signature", None)


def build(
    spec: tuple[str, str, str | None],
    options: Mapping[str, Any],
    fail: Callable[[str, str], ConfigError],
) -> HexBodyScheme:
    name, header, delivery = spec
    allowed = {"authorization"} if name == "checkout" else set()
    unknown = set(options) - allowed
    if unknown:
        raise fail(f"verify.{sorted(unknown)[0]}", f"unknown option for scheme {name!r}")
    authorization = options.get("authorization", [])
    if isinstance(authorization, str):
        authorization = authorization.split()
    if not isinstance(authorization, list) or not all(
        isinstance(a, str) and a for a in authorization
    ):
        raise fail("verify.authorization", "expected a list of header values")
    return HexBodyScheme(name, header, delivery, authorization)
