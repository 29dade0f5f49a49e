"""What still depends on a month of payments, asked before retention retires it.

Detaching (or dropping) `payments_YYYY_MM` takes its rows out of every query of the
application. Work that was acknowledged and still needs those rows would then fail or
vanish quietly, so partition maintenance counts it first and, by default
(`PARTITION_RETENTION_WAIT=true`), keeps the month until none is left:

- pending payments: a final status may still arrive for them (a status event for a
  retired payment is only a review, gateway.db.status);
- parked status updates whose payment is in the month (a payment recorded by a path
  without the writer's hook, waiting for the poller's sweep);
- unpublished events: lean outbox rows whose payload is built from the payment at
  publish time (dead letters included);
- open exceptions: unresolved payment reviews and reconciliation items naming one of
  the month's payments.

Every query starts from the small table and probes the partition by its indexes
(reference_number, the primary key on id), except pending payments, which use the
partial index on uncommon statuses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from gateway.db.payment_search import reference_equals
from gateway.db.tables import quote_ident

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Dependents:
    pending_payments: int = 0
    parked_updates: int = 0
    unpublished_events: int = 0
    open_exceptions: int = 0

    @property
    def total(self) -> int:
        return (
            self.pending_payments
            + self.parked_updates
            + self.unpublished_events
            + self.open_exceptions
        )

    def describe(self) -> str:
        """`3 pending payments, 1 parked update` (only the non-zero counts)."""
        parts = [
            (self.pending_payments, "pending payment"),
            (self.parked_updates, "parked update"),
            (self.unpublished_events, "unpublished event"),
            (self.open_exceptions, "open exception"),
        ]
        return ", ".join(f"{n} {what}{'s' if n != 1 else ''}" for n, what in parts if n)

    def as_dict(self) -> dict[str, int]:
        return {
            "pending_payments": self.pending_payments,
            "parked_updates": self.parked_updates,
            "unpublished_events": self.unpublished_events,
            "open_exceptions": self.open_exceptions,
        }


def _sql(schema: str, partition: str) -> str:
    s, p = quote_ident(schema), f"{quote_ident(schema)}.{quote_ident(partition)}"
    parked = reference_equals("x.reference_number", "u.reference_number")
    return f"""
SELECT
    (SELECT count(*) FROM {p} WHERE status = 'pending') AS pending_payments,
    (SELECT count(*) FROM {s}.pending_status_updates u
     WHERE EXISTS (SELECT 1 FROM {p} x WHERE {parked}))
        AS parked_updates,
    (SELECT count(*) FROM {s}.outbox o
     WHERE o.payment_date >= $1 AND o.payment_date < $2) AS unpublished_events,
    (SELECT count(*) FROM {s}.payment_reviews v
     WHERE v.resolved_at IS NULL
       AND EXISTS (SELECT 1 FROM {p} x WHERE x.id = v.payment_id))
  + (SELECT count(*) FROM {s}.reconciliation_items i
     WHERE i.state <> 'resolved' AND i.category NOT IN ('matched', 'matched_with_fee')
       AND EXISTS (SELECT 1 FROM {p} x WHERE x.id = i.payment_id)) AS open_exceptions
"""


async def month_dependents(
    conn: asyncpg.Connection,
    schema: str,
    partition: str,
    lower: datetime,
    upper: datetime,
) -> Dependents:
    """What in `schema` still needs the payments partition `partition` ([lower, upper))."""
    row = await conn.fetchrow(
        _sql(schema, partition), lower.replace(tzinfo=None), upper.replace(tzinfo=None)
    )
    assert row is not None
    return Dependents(**{k: int(v) for k, v in row.items()})


def _review_parked_sql(schema: str, partition: str) -> str:
    s, p = quote_ident(schema), f"{quote_ident(schema)}.{quote_ident(partition)}"
    parked = reference_equals("x.reference_number", "u.reference_number")
    return f"""
WITH moved AS (
    DELETE FROM {s}.pending_status_updates u
    WHERE EXISTS (SELECT 1 FROM {p} x WHERE {parked})
    RETURNING u.reference_number, u.status, u.provider_event_at, u.channel, u.delivery_id
), latest AS (
    SELECT DISTINCT ON (m.reference_number) m.*, x.id AS payment_id
    FROM moved m JOIN {p} x ON {reference_equals("x.reference_number", "m.reference_number")}
    ORDER BY m.reference_number, m.provider_event_at DESC NULLS LAST
), review AS (
    INSERT INTO {s}.payment_reviews
        (reference_number, payment_id, source, reason, provider_status, details)
    SELECT reference_number, payment_id, 'retention', 'payment_retired', status,
           jsonb_build_object('status', status, 'cause', 'parked_webhook', 'channel', channel,
                              'provider_event_at', provider_event_at, 'partition', $1::text)
    FROM latest
    ON CONFLICT (reference_number, reason) WHERE resolved_at IS NULL DO UPDATE
    SET occurrences = payment_reviews.occurrences + 1, last_seen_at = now()
), aud AS (
    INSERT INTO {s}.audit_log (actor, action, reference_number, details)
    SELECT 'partition_maintenance', 'status_for_retired_payment', reference_number,
           jsonb_build_object('status', status, 'cause', 'parked_webhook', 'channel', channel,
                              'delivery_id', delivery_id, 'provider_event_at',
                              provider_event_at, 'partition', $1::text)
    FROM moved
)
SELECT count(*) FROM moved
"""


async def review_parked(conn: asyncpg.Connection, schema: str, partition: str) -> int:
    """Move the status updates parked for the payments of `partition` (being retired, in
    the caller's transaction) to the operators' queue, one review per payment and one
    audit entry per update: they can no longer be applied, and must not vanish."""
    moved = int(await conn.fetchval(_review_parked_sql(schema, partition), partition))
    if moved:
        log.warning("%d status updates parked for %s moved to payment_reviews", moved, partition)
    return moved
