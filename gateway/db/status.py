"""Payment lifecycle in the database: status updates through the state machine.

Every status change, whatever brought it (a webhook, a parked update whose payment
finally arrived, the provider status poller), goes through `apply_status`: lock the
payment row, ask `lifecycle.decide`, and for an applied change write the row, the
audit entry and the `payment.status_changed` outbox event in one transaction. The
row lock (`SELECT ... FOR UPDATE`) serialises concurrent updates of one payment, so
none is lost and the version counts every applied change.

A status-only delivery for a reference we do not know yet is parked in
`pending_status_updates` (answered `deferred`) and applied when the payment is
recorded. Parking and recording serialise on a lock per reference bucket (sql/120):
the parker looks for the payment again once it holds the lock, the recording
statement looks for parked rows once it holds it, so the one that comes second
always sees what the first committed and the writer's after-commit hook applies it.
Parked rows are claimed with `DELETE ... RETURNING`, so whichever party gets there
(that hook, the poller's sweep for payments recorded by staging) applies each once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from gateway.db.event_log import append_event_sql
from gateway.domain import events
from gateway.domain.lifecycle import Outcome, decide
from gateway.observability import metrics

DEFERRED = "deferred"
# The reference was recorded but its payment's month is retired (detached or dropped):
# nothing to apply the event to, so it is kept for an operator instead (payment_reviews).
RETIRED = "retired"

_PARKING_LOCK = "SELECT payment_service.lock_for_parking($1)"

_LOCK = """
SELECT p.id, p.payment_date, p.status, p.provider_event_at,
       encode(r.payload_hash, 'hex') AS payload_hash
FROM payment_service.payment_references r
JOIN payment_service.payments p ON p.id = r.payment_id AND p.payment_date = r.payment_date
WHERE r.reference_number = $1
FOR UPDATE OF p
"""

_APPLY = f"""
WITH upd AS (
    UPDATE payment_service.payments
    SET status = $3, status_updated_at = now(),
        provider_event_at = COALESCE($4, provider_event_at), version = version + 1
    WHERE id = $1 AND payment_date = $2
    RETURNING version
), aud AS (
    INSERT INTO payment_service.audit_log (actor, action, reference_number, payment_id, details)
    VALUES ($5, 'status_change', $6, $1, $7::jsonb)
), evt AS (
    {append_event_sql(event_id="$8", event_type="$9", topic="$10", key="$6", payload="$11")}
)
SELECT version FROM upd
"""

# Does the reference exist, its payment gone with a retired month?
_REFERENCE = """
SELECT payment_id, payment_date FROM payment_service.payment_references
WHERE reference_number = $1
"""

# One open review per reference (counted again on each event) and an audit entry per event.
_REVIEW_RETIRED = """
WITH review AS (
    INSERT INTO payment_service.payment_reviews
        (reference_number, payment_id, source, reason, provider_status, details)
    VALUES ($1, $2, $3, 'payment_retired', $4, $5::jsonb)
    ON CONFLICT (reference_number, reason) WHERE resolved_at IS NULL DO UPDATE
    SET occurrences = payment_reviews.occurrences + 1, last_seen_at = now(),
        provider_status = EXCLUDED.provider_status, details = EXCLUDED.details
    RETURNING id
), aud AS (
    INSERT INTO payment_service.audit_log (actor, action, reference_number, payment_id, details)
    VALUES ($6, 'status_for_retired_payment', $1, $2, $5::jsonb)
)
SELECT id FROM review
"""

_RAW = """
INSERT INTO payment_service.webhook_events
    (channel, delivery_id, reference_number, payment_id, outcome, body)
VALUES ($1, $2, $3, $4, $5, $6)
"""

# A retried delivery (same channel and delivery id) parks nothing twice (sql/090).
_PARK = """
INSERT INTO payment_service.pending_status_updates
    (reference_number, status, provider_event_at, channel, delivery_id)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (channel, delivery_id) WHERE delivery_id IS NOT NULL DO NOTHING
RETURNING id
"""

_CLAIM_PARKED = """
DELETE FROM payment_service.pending_status_updates u
USING payment_service.payment_references r
WHERE u.reference_number = ANY($1::text[]) AND r.reference_number = u.reference_number
RETURNING u.id, u.reference_number, u.status, u.provider_event_at, u.channel
"""

# Parked updates whose payment exists (recorded by a path without the hook, e.g. staging).
_ORPHANED_PARKED = """
SELECT DISTINCT u.reference_number
FROM payment_service.pending_status_updates u
JOIN payment_service.payment_references r USING (reference_number)
LIMIT $1
"""


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """One report of a payment's status, from wherever it came."""

    reference: str
    status: str
    event_at: datetime | None  # the provider's time of the event (naive UTC), if it gave one
    cause: str  # webhook | parked_webhook | status_poll | ...: travels in the event
    actor: str  # who the audit log names
    channel: str | None = None
    delivery_id: str | None = None
    body: bytes | None = None  # the raw delivery, kept in webhook_events when given
    id_is_key: bool = True  # False: an unsigned delivery id, recorded but never deduplicated on


@dataclass(frozen=True, slots=True)
class StatusResult:
    outcome: str  # updated | stale | duplicate | deferred | retired | missing
    reason: str
    reference_number: str
    payment_id: str | None = None
    old_status: str | None = None
    new_status: str | None = None
    payload_hash: str | None = None


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


async def apply_status(
    conn: asyncpg.Connection, event: StatusEvent, *, topic: str, park: bool = True
) -> StatusResult:
    """Apply one status event to the payment with its reference, in one transaction.

    Opens a transaction (a savepoint when the caller already holds one). With `park`,
    an unknown reference is parked for later instead of reported as missing. A reference
    whose payment's month was retired gets a review instead (`retired`), from any path.
    """
    reference = event.reference
    async with conn.transaction():
        row = await conn.fetchrow(_LOCK, reference)
        if row is None and park:
            # Hold the reference's parking lock, then look again with a fresh snapshot: a
            # batch recording it has committed by now, or will see our parked row.
            await conn.execute(_PARKING_LOCK, reference)
            row = await conn.fetchrow(_LOCK, reference)
        known = None if row is not None else await conn.fetchrow(_REFERENCE, reference)
        if known is not None:
            result = await _review_retired(conn, event, known)
        elif row is None:
            if not park:
                return StatusResult("missing", "unknown_reference", reference)
            parked = await conn.fetchval(
                _PARK, reference, event.status, _aware(event.event_at), event.channel,
                event.delivery_id if event.id_is_key else None,
            )  # fmt: skip
            reason = "unknown_reference" if parked is not None else "already_parked"
            result = StatusResult(DEFERRED, reason, reference, new_status=event.status)
        else:
            decision = decide(row["status"], row["provider_event_at"], event.status, event.event_at)
            pid = str(row["id"])
            result = StatusResult(
                str(decision.outcome), decision.reason, reference, pid, row["status"],
                event.status if decision.outcome == Outcome.UPDATED else row["status"],
                row["payload_hash"],
            )  # fmt: skip
            if decision.outcome == Outcome.UPDATED:
                await _write_change(conn, row, result, event, topic)
        if event.body is not None and event.channel is not None:  # every delivery is logged
            payment_id = row["id"] if row is not None else known and known["payment_id"]
            await conn.execute(
                _RAW, event.channel, event.delivery_id, reference, payment_id, result.outcome,
                event.body,
            )  # fmt: skip
    metrics.status_updates.labels(result.outcome).inc()
    return result


async def _review_retired(
    conn: asyncpg.Connection, event: StatusEvent, known: asyncpg.Record
) -> StatusResult:
    """A status event for a payment whose month was retired: put it in the operators'
    queue and the audit log, since there is no row left to apply it to."""
    details = {
        "status": event.status,
        "cause": event.cause,
        "channel": event.channel,
        "delivery_id": event.delivery_id,
        "provider_event_at": event.event_at.isoformat() if event.event_at else None,
        "payment_date": known["payment_date"].isoformat(),
    }
    await conn.fetchval(
        _REVIEW_RETIRED, event.reference, known["payment_id"], event.cause[:32], event.status,
        details, event.actor,
    )  # fmt: skip
    return StatusResult(RETIRED, "payment_retired", event.reference, str(known["payment_id"]))


async def _write_change(
    conn: asyncpg.Connection,
    row: asyncpg.Record,
    result: StatusResult,
    event: StatusEvent,
    topic: str,
) -> None:
    outbox = events.status_changed(
        payment_id=row["id"],
        reference_number=result.reference_number,
        old_status=row["status"],
        new_status=str(result.new_status),
        provider_event_at=event.event_at,
        cause=event.cause,
    )
    details = {
        "old": row["status"],
        "new": result.new_status,
        "cause": event.cause,
        "channel": event.channel,
        "provider_event_at": event.event_at.isoformat() if event.event_at else None,
    }
    await conn.fetchval(
        _APPLY, row["id"], row["payment_date"], result.new_status, _aware(event.event_at),
        event.actor, result.reference_number, details, outbox.event_id, outbox.event_type, topic,
        outbox.payload,
    )  # fmt: skip


async def apply_parked(
    conn: asyncpg.Connection, references: Sequence[str], *, topic: str, actor: str
) -> list[StatusResult]:
    """Claim and apply the parked updates of these references, oldest provider time first."""
    if not references:
        return []
    results: list[StatusResult] = []
    async with conn.transaction():
        rows = await conn.fetch(_CLAIM_PARKED, list(references))
        if not rows:
            return []
        epoch = datetime.min.replace(tzinfo=UTC)
        rows = sorted(
            rows, key=lambda r: (r["reference_number"], r["provider_event_at"] or epoch, r["id"])
        )
        for r in rows:
            parked = StatusEvent(
                r["reference_number"], r["status"], r["provider_event_at"],
                cause="parked_webhook", actor=actor, channel=r["channel"],
            )  # fmt: skip
            results.append(await apply_status(conn, parked, topic=topic, park=False))
    return results


async def sweep_parked(pool: asyncpg.Pool, *, topic: str, actor: str, limit: int = 500) -> int:
    """Apply parked updates whose payment exists but was recorded without the hook."""
    async with pool.acquire() as conn:
        refs = [r["reference_number"] for r in await conn.fetch(_ORPHANED_PARKED, limit)]
        results = await apply_parked(conn, sorted(refs), topic=topic, actor=actor)
    return sum(1 for r in results if r.outcome == Outcome.UPDATED)
