"""The payment value that flows from validation to the writer, the staging
processor and the events."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

STATUSES = ("pending", "succeeded", "failed", "reversed", "refunded")
# The business fields that make two deliveries of one reference "the same payment"; a
# difference in any of them is a conflict (409). A channel may narrow them (see channels).
IDENTITY_FIELDS = ("amount", "loan_account_number", "cif", "payment_date")
DEFAULT_STATUS = "succeeded"

# Column widths from the schema; validation enforces them before Postgres does. The
# account and customer columns were widened in sql/110 to hold what providers document
# for the fields the presets map there (Stripe metadata values: 500 characters).
REFERENCE_MAX = 255
ACCOUNT_MAX = 500
CIF_MAX = 500
CHANNEL_MAX = 100
# 13 integer digits (seed 004's DECIMAL(15,2)); sql/110 allows a third decimal.
AMOUNT_MAX = Decimal("9999999999999.99")
_CENT = Decimal("0.01")


# Not frozen: a frozen dataclass sets each of its 14 fields through object.__setattr__,
# and one is built per delivery (1.6 -> 0.5 µs). Nothing assigns to a Payment after
# validation; `dataclasses.replace` makes the changed copies.
@dataclass(slots=True)
class Payment:
    reference_number: str
    loan_account_number: str
    cif: str
    amount: Decimal
    # The provider's date and time as it sent them, offset dropped (naive): its calendar
    # day is the day partitions and reconciliation use.
    payment_date: datetime
    payment_channel: str | None = None
    metadata: dict[str, Any] | None = field(default=None, compare=False)
    status: str = DEFAULT_STATUS
    provider_event_at: datetime | None = None  # naive UTC
    payment_at: datetime | None = None  # the instant (naive UTC) when a zone was sent
    currency: str | None = None  # ISO 4217, where the channel names one
    identity: tuple[str, ...] = field(default=IDENTITY_FIELDS, compare=False)
    _hash: str = field(default="", init=False, repr=False, compare=False)

    @property
    def payload_hash(self) -> str:
        """Hash of the business fields that decide duplicate vs conflict (computed once).

        By default amount, account, cif and payment date count: a provider re-sending
        the same payment with other metadata or another status is the same payment.
        """
        if not self._hash:
            value = business_hash(
                self.reference_number,
                self.loan_account_number,
                self.cif,
                self.amount,
                self.payment_at or self.payment_date,
                self.identity,
            )
            self._hash = value
        return self._hash


def business_hash(
    reference: str,
    account: str,
    cif: str,
    amount: Decimal,
    payment_date: datetime,
    identity: tuple[str, ...] = IDENTITY_FIELDS,
) -> str:
    """`payment_date` is the instant in naive UTC where one is known: what every
    reference recorded before sql/110 was hashed with, so their re-deliveries still
    compare equal. An amount's third decimal counts only when it is used."""
    cents = amount.quantize(_CENT)
    amount_text = format(cents if cents == amount else amount, "f")
    date_text = payment_date.isoformat(timespec="microseconds")
    if identity == IDENTITY_FIELDS:  # every field counts: no lookup by name
        parts: tuple[str, ...] = (reference, amount_text, account, cif, date_text)
    else:
        values = {
            "amount": amount_text,
            "loan_account_number": account,
            "cif": cif,
            "payment_date": date_text,
        }
        parts = (reference, *(values[f] if f in identity else "" for f in IDENTITY_FIELDS))
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]
