"""Python statements of rules that production runs in SQL, kept as test oracles.

The `payment.recorded` payload and the staging row rules are computed by Postgres
(gateway.db.events_sql, workers.staging_sql); these functions say in Python what those
statements must produce, built from the production pieces they mirror, and the parity
tests compare the two over awkward values.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from gateway.domain.events import PAYMENT_RECORDED, OutboxEvent, iso_utc
from gateway.domain.model import Payment
from gateway.domain.validation import DateWindow, validate_payment
from gateway.errors import ValidationError

_CENT = Decimal("0.01")


def _money(value: Decimal) -> str:
    """2 decimals, or 3 when a three-decimal currency uses its third: never rounded."""
    cents = value.quantize(_CENT)
    return format(cents if cents == value else value, "f")


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
    currency: str | None = None,
    payment_at: datetime | None = None,
) -> OutboxEvent:
    """`payment_date` on the topic is the instant in UTC: `payment_at` where the provider
    sent a zone, else the stored date; `currency` follows `amount` only when known."""
    event_id = uuid.UUID(bytes=os.urandom(16), version=4)
    payment: dict[str, Any] = {
        "id": str(payment_id),
        "reference_number": reference_number,
        "loan_account_number": loan_account_number,
        "cif": cif,
        "amount": _money(amount),
    }
    if currency is not None:
        payment["currency"] = currency
    payment.update(
        {
            "payment_date": iso_utc(payment_at or payment_date),
            "payment_channel": payment_channel,
            "source": source,
            "status": status,
            "metadata": metadata or {},
        }
    )
    body = {
        "event_id": str(event_id),
        "event_type": PAYMENT_RECORDED,
        "timestamp": timestamp or iso_utc(now or datetime.now(UTC)),
        "payment": payment,
    }
    return OutboxEvent(event_id, PAYMENT_RECORDED, reference_number, orjson.dumps(body))


def validate_staging_row(row: Mapping[str, Any], *, window: DateWindow) -> Payment:
    """What the webhook's validation says of a typed `payment_staging` row.

    The row's typed columns are handed over as a webhook body would carry them: the
    timestamp as ISO 8601 (naive UTC), jsonb that arrived as text decoded once.
    """
    doc = dict(row)
    payment_date = doc.get("payment_date")
    if isinstance(payment_date, datetime):
        if payment_date.tzinfo is not None:
            payment_date = payment_date.astimezone(UTC).replace(tzinfo=None)
        doc["payment_date"] = payment_date.isoformat()
    metadata = doc.get("metadata")
    if isinstance(metadata, str | bytes):
        try:
            doc["metadata"] = orjson.loads(metadata)
        except orjson.JSONDecodeError:
            raise ValidationError("metadata", "is not valid JSON") from None
    return validate_payment(doc, window=window)
