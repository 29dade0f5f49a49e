"""Paddle Billing: `Paddle-Signature: ts=<unix>;h1=<hex>[;h1=<hex>...]`, the hex
HMAC-SHA256 of `<ts>:<body>` under the notification destination's secret key.

Several `h1` entries may appear while a secret is rotated; any one that matches an
active key passes. Keys other than `ts` and `h1` are ignored (a future algorithm
must not break today's deliveries), a repeated `ts` is refused. The timestamp is
checked against the channel's tolerance after the signature, both directions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gateway.ingest.signatures import (
    SignatureError,
    Verified,
    _check_tolerance,
    _check_v1,
    _hex_digest,
    _mac,
    _require_keys,
    _signature_header,
    _timestamp,
)

HEADER = "Paddle-Signature"


class PaddleScheme:
    name = "paddle"

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
        header = _signature_header(headers, HEADER, "paddle-signature")
        ts_field: str | None = None
        candidates: list[bytes] = []
        seen_h1 = False
        for item in header.split(";"):
            item = item.strip()
            if not item:
                continue
            name, sep, value = item.partition("=")
            if not sep:
                raise SignatureError("malformed_signature", f"{HEADER} is not key=value")
            if name == "ts":
                if ts_field is not None:
                    raise SignatureError("malformed_timestamp", f"{HEADER} repeats ts=")
                ts_field = value
            elif name == "h1":
                seen_h1 = True
                digest = _hex_digest(value)
                if digest is not None:
                    candidates.append(digest)
        timestamp, raw_ts = _timestamp(ts_field)
        _check_v1(keys, raw_ts.encode("ascii") + b":", body, candidates, seen_h1, HEADER)
        _check_tolerance(timestamp, now, tolerance)
        return Verified(delivery_id=None, timestamp=timestamp)


def sign(key: bytes, body: bytes, *, now: int) -> dict[str, str]:
    """The header Paddle would send for `body` at `now` (tests, bench)."""
    return {HEADER: f"ts={now};h1={_mac(key, f'{now}:'.encode(), body).hex()}"}
