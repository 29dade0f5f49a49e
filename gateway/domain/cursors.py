"""Opaque keyset cursors for the ops API's lists.

A page ends at a row's sort key (a timestamp and an id, for example); the next page asks
for rows strictly past it. Unlike OFFSET this costs the same on page 1 and page 1,000
and never repeats or skips a row when rows are inserted between two pages. The key is
sent to the client as base64url JSON, so a client can keep it but need not parse it.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

import orjson

from gateway.errors import ValidationError


def encode(*key: Any) -> str:
    """A cursor for the given key (datetimes, ints and strings)."""
    parts = [{"t": v.isoformat()} if isinstance(v, datetime) else v for v in key]
    return base64.urlsafe_b64encode(orjson.dumps(parts)).decode().rstrip("=")


def decode(cursor: str, shape: tuple[type, ...], field: str = "cursor") -> tuple[Any, ...]:
    """The key a cursor holds, checked against `shape` (one type per part); 422 otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise ValidationError(field, "not a cursor this API returned") from None
    if not isinstance(parts, list) or len(parts) != len(shape):
        raise ValidationError(field, "not a cursor this API returned")
    out: list[Any] = []
    for part, kind in zip(parts, shape, strict=True):
        out.append(_part(part, kind, field))
    return tuple(out)


def _part(part: Any, kind: type, field: str) -> Any:
    if kind is datetime:
        if isinstance(part, dict) and isinstance(part.get("t"), str):
            try:
                value = datetime.fromisoformat(part["t"])
            except ValueError:
                pass
            else:
                if value.tzinfo is not None:
                    return value
        raise ValidationError(field, "not a cursor this API returned")
    if (
        kind is int
        and isinstance(part, int)
        and not isinstance(part, bool)
        and -(2**63) <= part < 2**63
    ):
        return part
    if kind is str and isinstance(part, str) and len(part) <= 255:
        return part
    raise ValidationError(field, "not a cursor this API returned")
