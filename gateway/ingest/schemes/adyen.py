"""Adyen standard notifications: every NotificationRequestItem carries its own HMAC.

Adyen does not sign the body. Each item's `additionalData.hmacSignature` is the
base64 HMAC-SHA256, under the hex-decoded HMAC key, of eight of the item's values
joined by colons in a fixed order (an absent value is the empty string)::

    pspReference:originalReference:merchantAccountCode:merchantReference:
    amount.value:amount.currency:eventCode:success

Every item of a notification must verify, or the whole request is refused: one
forged item beside genuine ones means the request is not Adyen's. The signed values
include the event code, the outcome and the amount, so an item's mapping can be
trusted field by field; its other fields (additionalData, eventDate) are not signed.
Adyen signs no timestamp: replays are stopped by the per-item delivery id
(pspReference, eventCode, success) and the reference table.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from gateway.errors import ConfigError
from gateway.ingest.signatures import (
    DIGEST_SIZE,
    SignatureError,
    Verified,
    _b64_digest,
    _require_keys,
)

ITEMS = "notificationItems"
ITEM = "NotificationRequestItem"
_LEADING = ("pspReference", "originalReference", "merchantAccountCode", "merchantReference")
MAX_ITEMS = 1000


def _text(value: Any, field: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # JSON true/false, as Adyen writes them in strings
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    raise SignatureError("malformed_signature", f"the signed field {field} is not a string")


def signing_string(item: Mapping[str, Any]) -> bytes:
    """The colon-joined values Adyen signs for one NotificationRequestItem."""
    amount = item.get("amount")
    if not isinstance(amount, dict):
        amount = {}
    parts = [_text(item.get(name), name) for name in _LEADING]
    parts.append(_text(amount.get("value"), "amount.value"))
    parts.append(_text(amount.get("currency"), "amount.currency"))
    parts.append(_text(item.get("eventCode"), "eventCode"))
    parts.append(_text(item.get("success"), "success"))
    return ":".join(parts).encode("utf-8")


def notification_items(body: bytes) -> list[dict[str, Any]]:
    """The NotificationRequestItems of a body; SignatureError when it is not a notification."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise SignatureError("missing_signature", "the body is not an Adyen notification") from None
    wrappers = doc.get(ITEMS) if isinstance(doc, dict) else None
    if not isinstance(wrappers, list) or not wrappers:
        raise SignatureError("missing_signature", f"the body has no {ITEMS}")
    if len(wrappers) > MAX_ITEMS:
        raise SignatureError("malformed_signature", f"more than {MAX_ITEMS} {ITEMS}")
    items = []
    for wrapper in wrappers:
        item = wrapper.get(ITEM) if isinstance(wrapper, dict) else None
        if not isinstance(item, dict):
            raise SignatureError("malformed_signature", f"an entry of {ITEMS} has no {ITEM}")
        items.append(item)
    return items


def _digest(key: bytes, item: Mapping[str, Any]) -> bytes:
    return hmac.digest(key, signing_string(item), "sha256")


class AdyenScheme:
    name = "adyen"

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
        for index, item in enumerate(notification_items(body)):
            extra = item.get("additionalData")
            signature = extra.get("hmacSignature") if isinstance(extra, dict) else None
            if not isinstance(signature, str) or not signature:
                raise SignatureError(
                    "missing_signature", f"item {index} has no additionalData.hmacSignature"
                )
            candidate = _b64_digest(signature.strip())
            if candidate is None:
                raise SignatureError(
                    "malformed_signature", f"item {index}: expected the base64 of a SHA-256 HMAC"
                )
            if not any(
                len(candidate) == DIGEST_SIZE and hmac.compare_digest(_digest(k, item), candidate)
                for k in keys
            ):
                raise SignatureError(
                    "signature_mismatch", f"item {index} matches no active HMAC key"
                )
        return Verified(delivery_id=None, timestamp=None)


def decode_key(secret: str) -> bytes:
    """Adyen shows the HMAC key as hex; the key is the bytes it spells."""
    text = secret.strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ConfigError("a secret for scheme 'adyen' is not a hex HMAC key") from None
    if not key or any(c.isspace() for c in text):
        raise ConfigError("a secret for scheme 'adyen' is not a hex HMAC key")
    return key


def sign_item(key: bytes, item: dict[str, Any]) -> dict[str, Any]:
    """`item` with its additionalData.hmacSignature set (tests, bench)."""
    signature = base64.b64encode(_digest(key, item)).decode("ascii")
    extra = dict(item.get("additionalData") or {})
    extra["hmacSignature"] = signature
    return {**item, "additionalData": extra}


def notification(key: bytes, items: Sequence[dict[str, Any]], *, live: bool = False) -> bytes:
    """A signed notification body holding `items` (tests, bench)."""
    wrapped = [{ITEM: sign_item(key, item)} for item in items]
    return orjson.dumps({"live": "true" if live else "false", ITEMS: wrapped})
