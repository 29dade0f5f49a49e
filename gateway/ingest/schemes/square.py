"""Square: `x-square-hmacsha256-signature` is the base64 HMAC-SHA256 of the
notification URL followed by the body, under the subscription's signature key.

The URL is part of what is signed, and it is the URL registered in Square's
Developer Console, byte for byte: paygate takes it from configuration
(`[channels.<name>.verify] notification_url`), never from the request, so a TLS
proxy, a load balancer or a rewritten Host header in between changes nothing. A
list of URLs is accepted while a subscription moves from one URL to another.
Square signs no timestamp: replays are stopped by the event id and the reference table.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from gateway.errors import ConfigError
from gateway.ingest.signatures import (
    SignatureError,
    Verified,
    _any_match,
    _b64_digest,
    _mac,
    _require_keys,
    _signature_header,
)

HEADER = "x-square-hmacsha256-signature"


class SquareScheme:
    name = "square"

    def __init__(self, notification_urls: Sequence[str]) -> None:
        self.urls = tuple(url.encode("utf-8") for url in notification_urls)

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
        header = _signature_header(headers, HEADER, HEADER)
        digest = _b64_digest(header.strip())
        if digest is None:
            raise SignatureError("malformed_signature", "expected the base64 of a SHA-256 HMAC")
        if not any(_any_match(keys, url, body, [digest]) for url in self.urls):
            raise SignatureError(
                "signature_mismatch",
                "no signature matches an active key and the configured notification_url",
            )
        return Verified(delivery_id=None, timestamp=None)


def build(options: Mapping[str, Any], fail: Callable[[str, str], ConfigError]) -> SquareScheme:
    urls = options.get("notification_url")
    if isinstance(urls, str):
        urls = [urls]
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise fail(
            "verify.notification_url",
            "Square signs the notification URL: set it to the URL registered with Square",
        )
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise fail("verify.notification_url", f"{url!r} is not an absolute http(s) URL")
    unknown = set(options) - {"notification_url"}
    if unknown:
        raise fail(f"verify.{sorted(unknown)[0]}", "unknown option for scheme 'square'")
    return SquareScheme(urls)


def sign(key: bytes, url: str, body: bytes) -> dict[str, str]:
    """The header Square would send for `body` posted to `url` (tests, bench)."""
    digest = _mac(key, url.encode("utf-8"), body)
    return {HEADER: base64.b64encode(digest).decode("ascii")}
