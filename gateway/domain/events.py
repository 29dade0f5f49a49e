"""Event payloads for the outbox (ARCHITECTURE "Events"): `payment.recorded` (seed 004's
PaymentRecordedEvent) and `payment.status_changed`. Amounts travel as strings so no
consumer ever sees a float."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

RECORDED = "payment.recorded"
STATUS_CHANGED = "payment.status_changed"


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One row for payment_service.outbox."""

    event_id: uuid.UUID
    event_type: str
    key: str  # reference_number: keeps every event of a payment in one partition, in order
    payload: bytes


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # naive values are UTC by convention
        return value.isoformat() + "Z"
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


_CENT = Decimal("0.01")


def _money(value: Decimal) -> str:
    if value.as_tuple().exponent == -2:  # validation already quantized it: the common case
        return str(value)
    return format(value.quantize(_CENT), "f")


def now_iso() -> str:
    """The `timestamp` of events built now; a batch computes it once for all its events."""
    return _iso(datetime.now(UTC))  # type: ignore[return-value]


def payment_recorded(
    *,
    payment_id: uuid.UUID | str,
    reference_number: str,
    loan_account_number: str,
    cif: str,
    amount: Decimal,
    payment_date: datetime,
    payment_channel: str | None,
    source: str,
    metadata: dict[str, Any] | None,
    status: str,
    now: datetime | None = None,
    timestamp: str | None = None,
) -> OutboxEvent:
    event_id = uuid.UUID(bytes=os.urandom(16), version=4)
    body = {
        "event_id": str(event_id),
        "event_type": RECORDED,
        "timestamp": timestamp or _iso(now or datetime.now(UTC)),
        "payment": {
            "id": str(payment_id),
            "reference_number": reference_number,
            "loan_account_number": loan_account_number,
            "cif": cif,
            "amount": _money(amount),
            "payment_date": _iso(payment_date),
            "payment_channel": payment_channel,
            "source": source,
            "status": status,
            "metadata": metadata or {},
        },
    }
    return OutboxEvent(event_id, RECORDED, reference_number, orjson.dumps(body))


def status_changed(
    *,
    payment_id: uuid.UUID | str,
    reference_number: str,
    old_status: str,
    new_status: str,
    provider_event_at: datetime | None,
    cause: str,
    now: datetime | None = None,
) -> OutboxEvent:
    event_id = uuid.uuid4()
    body = {
        "event_id": str(event_id),
        "event_type": STATUS_CHANGED,
        "timestamp": _iso(now or datetime.now(UTC)),
        "payment": {"id": str(payment_id), "reference_number": reference_number},
        "old_status": old_status,
        "new_status": new_status,
        "provider_event_at": _iso(provider_event_at),
        "cause": cause,
    }
    return OutboxEvent(event_id, STATUS_CHANGED, reference_number, orjson.dumps(body))
