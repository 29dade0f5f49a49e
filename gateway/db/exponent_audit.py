"""Finding payments recorded with a wrong currency exponent (issue 32).

Before sql/110 every channel converted minor units with one table (Stripe's): Adyen's CLP
was recorded 100 times too large, Checkout.com's ISK 100 times too small, and so on for
every currency whose exponent differs between the provider and Stripe. Those rows have
no `currency` (the column came with the fix) but keep the provider's code in
`metadata.currency`, which every minor-unit channel copied there. A row is a suspect when
its channel's preset gives its currency another exponent than the legacy table did, or
does not list it at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from gateway.ingest.currencies import CurrencyTable, legacy_exponent, meant_amount, unaffected

_SUSPECTS = """
SELECT reference_number, upper(metadata ->> 'currency') AS currency, amount, payment_date,
       created_at
FROM payment_service.payments
WHERE payment_channel = $1 AND currency IS NULL AND metadata ? 'currency'
  AND upper(metadata ->> 'currency') <> ALL($2::text[])
  AND ($3::timestamp IS NULL OR payment_date >= $3)
  AND ($4::timestamp IS NULL OR payment_date < $4)
ORDER BY payment_date, reference_number
LIMIT $5
"""


@dataclass(frozen=True)
class Suspect:
    reference_number: str
    payment_channel: str
    currency: str
    recorded: Decimal
    meant: Decimal | None  # None: the preset's table does not know the currency
    legacy_exponent: int
    exponent: int | None
    payment_date: datetime
    created_at: datetime


async def suspects(
    pool: asyncpg.Pool,
    payment_channel: str,
    table: CurrencyTable,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 1000,
) -> list[Suspect]:
    """Payments of one channel (its payment_channel value) recorded before sql/110 in a
    currency whose exponent `table` (the channel's preset) disagrees with the legacy one.

    A scan of the channel's rows (bounded by payment_date when since/until are given)."""
    rows = await pool.fetch(_SUSPECTS, payment_channel, unaffected(table), since, until, limit)
    return [
        Suspect(
            reference_number=r["reference_number"],
            payment_channel=payment_channel,
            currency=r["currency"],
            recorded=r["amount"],
            meant=meant_amount(r["amount"], r["currency"], table),
            legacy_exponent=legacy_exponent(r["currency"]),
            exponent=table.exponent(r["currency"]),
            payment_date=r["payment_date"],
            created_at=r["created_at"],
        )
        for r in rows
    ]
