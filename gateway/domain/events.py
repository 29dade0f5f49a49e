"""The events paygate publishes: `payment.recorded` (seed 004's PaymentRecordedEvent) and
`payment.status_changed`. Amounts travel as strings so no consumer ever sees a float.

A `payment.recorded` payload is built by Postgres inside the statement that records the
payment (gateway.db.events_sql); `payment.status_changed` is built here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

PAYMENT_RECORDED = "payment.recorded"
PAYMENT_STATUS_CHANGED = "payment.status_changed"


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One row for payment_service.outbox."""

    event_id: uuid.UUID
    event_type: str
    key: str  # reference_number: keeps every event of a payment in one partition, in order
    payload: bytes


def iso_utc(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z; microseconds only when not zero."""
    if value is None:
        return None
    if value.tzinfo is None:  # naive values are UTC by convention
        return value.isoformat() + "Z"
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


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
        "event_type": PAYMENT_STATUS_CHANGED,
        "timestamp": iso_utc(now or datetime.now(UTC)),
        "payment": {"id": str(payment_id), "reference_number": reference_number},
        "old_status": old_status,
        "new_status": new_status,
        "provider_event_at": iso_utc(provider_event_at),
        "cause": cause,
    }
    return OutboxEvent(event_id, PAYMENT_STATUS_CHANGED, reference_number, orjson.dumps(body))
