"""Turn an untrusted webhook document (or a staging row) into a `Payment`.

One rule set serves both ingestion paths, so a payment the webhook refuses is
also refused from staging. Everything here is pure and runs once per payment on
the hot path: patterns are compiled at import, there is no schema library, and
the common case is a handful of isinstance checks.

Every failure is a `ValidationError(field, detail)` (422 naming the field).
Details are short and never echo the input back: the body may carry data the
provider would not want in our logs, and a 40-char limit keeps bodies bounded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from gateway.domain.model import (
    ACCOUNT_MAX,
    AMOUNT_MAX,
    CHANNEL_MAX,
    CIF_MAX,
    DEFAULT_STATUS,
    REFERENCE_MAX,
    STATUSES,
    Payment,
)
from gateway.domain.references import FORBIDDEN, normalize_reference
from gateway.errors import ValidationError

__all__ = [
    "DateWindow",
    "date_window",
    "parse_amount",
    "parse_event_time",
    "parse_timestamp",
    "validate_payment",
]

_CENT = Decimal("0.01")
# Plain decimal notation only: no exponent, sign other than '-', spaces or
# non-ASCII digits (which Decimal() would otherwise happily accept).
_AMOUNT_RE = re.compile(r"-?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)")
_AMOUNT_STR_MAX = 40
_TIMESTAMP_STR_MAX = 64
# Control characters have no place in identifiers (NUL and lone surrogates cannot even be
# stored), nor invisible format characters (bidi controls, zero-width): the one rule for
# identifiers lives in gateway.domain.references.
BAD_CHARS = FORBIDDEN
# A JSON-escaped NUL (not an escaped backslash followed by "u0000"): jsonb rejects it.
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_STATUS_SET = frozenset(STATUSES)
_STATUS_HELP = "must be one of " + ", ".join(STATUSES)
_INT_AMOUNT_MAX = int(AMOUNT_MAX)


@dataclass(frozen=True, slots=True)
class DateWindow:
    """The payment dates we accept: those a live partition can hold.

    Older than the retention and the row would land in a partition that
    maintenance is about to detach; far in the future is a provider bug.
    """

    earliest: datetime  # naive UTC, inclusive
    latest: datetime  # naive UTC, inclusive


def date_window(now: datetime, retention_months: int, max_future_days: int) -> DateWindow:
    now = _to_naive_utc(now)
    months = now.year * 12 + (now.month - 1) - retention_months
    earliest = datetime(months // 12, months % 12 + 1, 1)
    return DateWindow(earliest=earliest, latest=now + timedelta(days=max_future_days))


def _to_naive_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


# -- strings -----------------------------------------------------------------


def _required_str(value: object, field: str, max_len: int) -> str:
    if not isinstance(value, str):
        if value is None:
            raise ValidationError(field, "is required")
        raise ValidationError(field, f"must be a string, not {_type_name(value)}")
    if not value or value.isspace():
        raise ValidationError(field, "must not be empty")
    return _checked_str(value, field, max_len)


def _optional_str(value: object, field: str, max_len: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string or null, not {_type_name(value)}")
    return _checked_str(value, field, max_len)


def _checked_str(value: str, field: str, max_len: int) -> str:
    if len(value) > max_len:
        raise ValidationError(field, f"longer than {max_len} characters")
    if BAD_CHARS.search(value) is not None:
        raise ValidationError(field, "contains control or invalid characters")
    return value


# -- amount ------------------------------------------------------------------


def parse_amount(value: object, field: str = "amount") -> Decimal:
    """Money as an exact Decimal with 2 places, whatever JSON shape it came in.

    A JSON number reaches us as a float; its shortest repr is the number the
    provider wrote, so that is what we parse (Decimal(0.1) would not be 0.10).
    """
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, str):
        if len(value) > _AMOUNT_STR_MAX:
            raise ValidationError(field, "too many characters for an amount")
        if _AMOUNT_RE.fullmatch(value) is None:
            raise ValidationError(field, "must be a plain decimal number")
        amount = Decimal(value)
    elif isinstance(value, bool):
        raise ValidationError(field, "must be a number or a decimal string, not bool")
    elif isinstance(value, int):
        # Range-check first: a 5000-digit int must not reach Decimal().
        if value <= 0:
            raise ValidationError(field, "must be greater than zero")
        if value > _INT_AMOUNT_MAX:
            raise ValidationError(field, "exceeds the maximum amount")
        return Decimal(value).quantize(_CENT)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(field, "must be a finite number")
        amount = Decimal(repr(value))
    elif value is None:
        raise ValidationError(field, "is required")
    else:
        raise ValidationError(
            field, f"must be a number or a decimal string, not {_type_name(value)}"
        )

    if not amount.is_finite():
        raise ValidationError(field, "must be a finite number")
    if amount <= 0:
        raise ValidationError(field, "must be greater than zero")
    if amount > AMOUNT_MAX:
        raise ValidationError(field, "exceeds the maximum amount")
    try:
        cents = amount.quantize(_CENT)
    except InvalidOperation:  # pragma: no cover - bounded above, kept as a guard
        raise ValidationError(field, "is not a valid amount") from None
    if cents != amount:
        raise ValidationError(field, "has more than 2 decimal places")
    return cents


# -- time --------------------------------------------------------------------


def parse_timestamp(value: object, field: str) -> datetime:
    """An ISO 8601 date or datetime string as naive UTC.

    A bare date is midnight UTC and a naive datetime is taken as UTC. Numbers
    are refused: for a payment date, seconds vs milliseconds is a guess.
    """
    if not isinstance(value, str):
        if value is None:
            raise ValidationError(field, "is required")
        raise ValidationError(
            field, f"must be an ISO 8601 date or datetime string, not {_type_name(value)}"
        )
    if len(value) > _TIMESTAMP_STR_MAX:
        raise ValidationError(field, "too long for an ISO 8601 timestamp")
    try:
        parsed = datetime.fromisoformat(value)
        return _to_naive_utc(parsed)
    except (ValueError, OverflowError):
        raise ValidationError(field, "is not a valid ISO 8601 date or datetime") from None


def parse_event_time(value: object, field: str = "event_time") -> datetime | None:
    """The provider's event time: ISO 8601 or unix seconds, naive UTC; None if absent."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationError(field, "must be a finite unix timestamp")
        try:
            return datetime.fromtimestamp(value, UTC).replace(tzinfo=None)
        except (ValueError, OverflowError, OSError):
            raise ValidationError(field, "unix timestamp out of range") from None
    return parse_timestamp(value, field)


def _in_window(value: datetime, field: str, window: DateWindow) -> datetime:
    if value < window.earliest:
        raise ValidationError(field, f"too old: before {window.earliest:%Y-%m-%d}")
    if value > window.latest:
        raise ValidationError(field, "too far in the future")
    return value


# -- other fields ------------------------------------------------------------


def _status(value: object) -> str:
    if value is None:
        return DEFAULT_STATUS
    if isinstance(value, str) and value in _STATUS_SET:
        return value
    raise ValidationError("status", _STATUS_HELP)


def _metadata(value: object) -> dict[str, Any] | None:
    """An object or null, checked to be storable as jsonb.

    The writer inserts many payments per transaction, so a value Postgres or the
    encoder refuses (NUL in a string, ints over 64 bits, absurd nesting) must be
    caught here rather than failing everyone else's batch.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationError("metadata", f"must be an object or null, not {_type_name(value)}")
    try:
        encoded = orjson.dumps(value)
    except orjson.JSONEncodeError:
        raise ValidationError("metadata", "is not storable as JSON") from None
    if b"\\u0000" in encoded and _JSON_NUL.search(encoded) is not None:
        raise ValidationError("metadata", "must not contain NUL characters")
    return value


def _build(get: Callable[[str], Any], window: DateWindow) -> Payment:
    """Check the fields in the order a reader of the error would expect."""
    reference = normalize_reference(
        _required_str(get("reference_number"), "reference_number", REFERENCE_MAX)
    )
    account = _required_str(get("loan_account_number"), "loan_account_number", ACCOUNT_MAX)
    cif = _required_str(get("cif"), "cif", CIF_MAX)
    amount = parse_amount(get("amount"))
    payment_date = _in_window(
        parse_timestamp(get("payment_date"), "payment_date"), "payment_date", window
    )
    channel = _optional_str(get("payment_channel"), "payment_channel", CHANNEL_MAX)
    metadata = _metadata(get("metadata"))
    status = _status(get("status"))
    event_at = parse_event_time(get("event_time"))
    if event_at is not None and event_at > window.latest:
        # A far-future provider time would make every later event look stale.
        raise ValidationError("event_time", "too far in the future")
    return Payment(
        reference_number=reference,
        loan_account_number=account,
        cif=cif,
        amount=amount,
        payment_date=payment_date,
        payment_channel=channel,
        metadata=metadata,
        status=status,
        provider_event_at=event_at,
    )


def validate_payment(doc: object, *, window: DateWindow) -> Payment:
    """Validate a decoded webhook body; unknown keys are ignored."""
    if not isinstance(doc, dict):
        raise ValidationError("body", f"must be a JSON object, not {_type_name(doc)}")
    return _build(doc.get, window)
