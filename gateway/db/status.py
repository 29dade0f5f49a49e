"""Payment lifecycle in the database: status updates through the state machine.

Every status change, whatever brought it (a webhook, a parked update whose payment
finally arrived, the provider status poller), goes through `apply_status`: lock the
payment row, ask `lifecycle.decide`, and for an applied change write the row, the
audit entry and the `payment.status_changed` outbox event in one transaction. The
row lock (`SELECT ... FOR UPDATE`) serialises concurrent updates of one payment, so
none is lost and the version counts every applied change.

A status-only delivery for a reference we do not know yet is parked in
`pending_status_updates` (answered `deferred`) and applied when the payment is
recorded. Parked rows are claimed with `DELETE ... RETURNING`, so whichever of the
racing parties gets there (the writer's after-commit hook, the parking request's
own re-check, the poller's sweep) applies each exactly once.
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

_ANY_PARKED = """
SELECT EXISTS (SELECT 1 FROM payment_service.pending_status_updates
               WHERE reference_number = ANY($1::text[]))
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


@dataclass(frozen=True, slots=True)
class StatusResult:
    outcome: str  # updated | stale | duplicate | deferred
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
    an unknown reference is parked for later instead of reported as missing.
    """
    reference = event.reference
    async with conn.transaction():
        row = await conn.fetchrow(_LOCK, reference)
        if row is None:
            if not park:
                return StatusResult("missing", "unknown_reference", reference)
            parked = await conn.fetchval(
                _PARK, reference, event.status, _aware(event.event_at), event.channel,
                event.delivery_id,
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
            await conn.execute(
                _RAW, event.channel, event.delivery_id, reference,
                row["id"] if row is not None else None, result.outcome, event.body,
            )  # fmt: skip
    metrics.status_updates.labels(result.outcome).inc()
    return result


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


async def any_parked(conn: asyncpg.Connection, references: Sequence[str]) -> bool:
    """One cheap read: does any of these references have an update waiting?"""
    return bool(await conn.fetchval(_ANY_PARKED, list(references)))


async def sweep_parked(pool: asyncpg.Pool, *, topic: str, actor: str, limit: int = 500) -> int:
    """Apply parked updates whose payment exists but was recorded without the hook."""
    async with pool.acquire() as conn:
        refs = [r["reference_number"] for r in await conn.fetch(_ORPHANED_PARKED, limit)]
        results = await apply_parked(conn, sorted(refs), topic=topic, actor=actor)
    return sum(1 for r in results if r.outcome == Outcome.UPDATED)
