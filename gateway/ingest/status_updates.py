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

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web

from gateway import appkeys
from gateway.db.payments import Candidate
from gateway.domain import events
from gateway.domain.lifecycle import Outcome, decide
from gateway.domain.model import REFERENCE_MAX, STATUSES, Payment
from gateway.domain.validation import parse_event_time
from gateway.errors import ValidationError
from gateway.ingest.dedup import Known
from gateway.ingest.writer import AfterCommit
from gateway.observability import metrics

log = logging.getLogger(__name__)

DEFERRED = "deferred"
_PAYMENT_FIELDS = ("amount", "loan_account_number", "cif")

_LOCK = """
SELECT p.id, p.payment_date, p.status, p.provider_event_at, r.payload_hash
FROM payment_service.payment_references r
JOIN payment_service.payments p ON p.id = r.payment_id AND p.payment_date = r.payment_date
WHERE r.reference_number = $1
FOR UPDATE OF p
"""

_APPLY = """
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
    INSERT INTO payment_service.outbox (event_id, event_type, topic, key, payload)
    VALUES ($8, $9, $10, $6, $11)
)
SELECT version FROM upd
"""

_RAW = """
INSERT INTO payment_service.webhook_events
    (channel, delivery_id, reference_number, payment_id, outcome, body)
VALUES ($1, $2, $3, $4, $5, $6)
"""

_PARK = """
INSERT INTO payment_service.pending_status_updates
    (reference_number, status, provider_event_at, channel)
VALUES ($1, $2, $3, $4)
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
class StatusResult:
    outcome: str  # updated | stale | duplicate | deferred
    reason: str
    reference_number: str
    payment_id: str | None = None
    old_status: str | None = None
    new_status: str | None = None
    payload_hash: str | None = None


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A validated status-only delivery."""

    reference_number: str
    status: str
    event_at: datetime | None  # naive UTC


def parse_status_update(fields: Any) -> StatusUpdate:
    """Validate a status-only body: reference_number, status and an optional event_time."""
    ref = fields.get("reference_number")
    if not isinstance(ref, str) or not ref.strip():
        raise ValidationError("reference_number", "is required")
    if len(ref) > REFERENCE_MAX or any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in ref):
        raise ValidationError("reference_number", "too long or contains control characters")
    status = fields.get("status")
    if status not in STATUSES:
        raise ValidationError("status", "must be one of " + ", ".join(STATUSES))
    return StatusUpdate(ref, status, parse_event_time(fields.get("event_time")))


def is_status_only(fields: Any) -> bool:
    """A body naming a reference and a status but none of the payment's business fields."""
    return (
        isinstance(fields, dict)
        and "reference_number" in fields
        and fields.get("status") is not None
        and not any(fields.get(k) is not None for k in _PAYMENT_FIELDS)
    )


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


async def apply_status(
    conn: asyncpg.Connection,
    reference: str,
    status: str,
    event_at: datetime | None,
    *,
    cause: str,
    actor: str,
    topic: str,
    park: bool = True,
    channel: str | None = None,
    delivery_id: str | None = None,
    body: bytes | None = None,
) -> StatusResult:
    """Apply one status event to the payment with this reference, in one transaction.

    Opens a transaction (a savepoint when the caller already holds one). With `park`,
    an unknown reference is parked for later instead of reported as missing.
    """
    async with conn.transaction():
        row = await conn.fetchrow(_LOCK, reference)
        if row is None:
            if not park:
                return StatusResult("missing", "unknown_reference", reference)
            await conn.execute(_PARK, reference, status, _aware(event_at), channel)
            result = StatusResult(DEFERRED, "unknown_reference", reference, new_status=status)
        else:
            decision = decide(row["status"], row["provider_event_at"], status, event_at)
            pid = str(row["id"])
            result = StatusResult(
                str(decision.outcome), decision.reason, reference, pid, row["status"],
                status if decision.outcome == Outcome.UPDATED else row["status"],
                row["payload_hash"],
            )  # fmt: skip
            if decision.outcome == Outcome.UPDATED:
                await _write_change(conn, row, result, event_at, cause, actor, topic, channel)
        if body is not None and channel is not None:
            await conn.execute(
                _RAW, channel, delivery_id, reference,
                row["id"] if row is not None else None, result.outcome, body,
            )  # fmt: skip
    metrics.status_updates.labels(result.outcome).inc()
    return result


async def _write_change(
    conn: asyncpg.Connection,
    row: asyncpg.Record,
    result: StatusResult,
    event_at: datetime | None,
    cause: str,
    actor: str,
    topic: str,
    channel: str | None,
) -> None:
    event = events.status_changed(
        payment_id=row["id"],
        reference_number=result.reference_number,
        old_status=row["status"],
        new_status=str(result.new_status),
        provider_event_at=event_at,
        cause=cause,
    )
    details = {
        "old": row["status"],
        "new": result.new_status,
        "cause": cause,
        "channel": channel,
        "provider_event_at": event_at.isoformat() if event_at else None,
    }
    await conn.fetchval(
        _APPLY, row["id"], row["payment_date"], result.new_status, _aware(event_at), actor,
        result.reference_number, details, event.event_id, event.event_type, topic, event.payload,
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
            results.append(
                await apply_status(
                    conn,
                    r["reference_number"],
                    r["status"],
                    r["provider_event_at"],
                    cause="parked_webhook",
                    actor=actor,
                    topic=topic,
                    park=False,
                    channel=r["channel"],
                )
            )
    return results


async def sweep_parked(pool: asyncpg.Pool, *, topic: str, actor: str, limit: int = 500) -> int:
    """Apply parked updates whose payment exists but was recorded without the hook."""
    async with pool.acquire() as conn:
        refs = [r["reference_number"] for r in await conn.fetch(_ORPHANED_PARKED, limit)]
        results = await apply_parked(conn, sorted(refs), topic=topic, actor=actor)
    return sum(1 for r in results if r.outcome == Outcome.UPDATED)


def _body(result: StatusResult) -> dict[str, Any]:
    out: dict[str, Any] = {"status": result.outcome, "payment_id": result.payment_id}
    if result.outcome == DEFERRED:
        out["reference_number"] = result.reference_number
    return out


class StatusService:
    """The webhook handler's StatusApplier: resources are read from the app per call,
    because the pool and the caches exist only once the app has started."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def is_status_only(self, fields: Any) -> bool:
        return is_status_only(fields)

    async def apply_update(
        self, fields: Any, *, channel: str, delivery_id: str | None, body: bytes
    ) -> tuple[dict[str, Any], str]:
        update = parse_status_update(fields)
        result = await self._apply(update.reference_number, update.status, update.event_at,
                                   channel=channel, delivery_id=delivery_id, body=body)  # fmt: skip
        return _body(result), result.outcome

    async def apply_payment(
        self, payment: Payment, *, channel: str, delivery_id: str | None, body: bytes
    ) -> tuple[dict[str, Any], str]:
        # The writer already kept this delivery's raw body (as a duplicate): not twice.
        result = await self._apply(payment.reference_number, payment.status,
                                   payment.provider_event_at, channel=channel,
                                   delivery_id=delivery_id, body=None)  # fmt: skip
        return _body(result), result.outcome

    async def _apply(
        self,
        reference: str,
        status: str,
        event_at: datetime | None,
        *,
        channel: str,
        delivery_id: str | None,
        body: bytes | None,
    ) -> StatusResult:
        app = self.app
        settings = app[appkeys.SETTINGS]
        topic = settings.kafka_topic
        async with app[appkeys.POOL].acquire(timeout=2) as conn:
            result = await apply_status(
                conn, reference, status, event_at, cause="webhook", actor=f"webhook:{channel}",
                topic=topic, channel=channel, delivery_id=delivery_id, body=body,
            )  # fmt: skip
            if result.outcome == DEFERRED:
                # The payment may have been committed while we parked: its hook could have
                # missed our row, so look again now that the row is committed.
                late = await apply_parked(conn, [reference], topic=topic, actor="webhook")
                if late:
                    result = late[-1]
        if result.outcome == Outcome.UPDATED:
            app[appkeys.OUTBOX_WAKE].ring()
            await self._refresh_caches(result)
        return result

    async def _refresh_caches(self, result: StatusResult) -> None:
        dedup = self.app.get(appkeys.DEDUP)
        if dedup is None or result.payment_id is None or result.payload_hash is None:
            return
        known = Known(result.payment_id, result.payload_hash, str(result.new_status))
        dedup.remember([(result.reference_number, known)])
        try:
            await dedup.publish([(result.reference_number, known)])
        except Exception:  # the caches are hints; the database already has the truth
            log.warning("could not refresh the reference cache after a status change")


def install(app: web.Application) -> None:
    app[appkeys.STATUS_APPLIER] = StatusService(app)

    async def apply_parked_hook(conn: asyncpg.Connection, created: Sequence[Candidate]) -> None:
        settings = app[appkeys.SETTINGS]
        refs = sorted({c.payment.reference_number for c in created})
        # One cheap read on the hot path; a row parked after it is caught by the parking
        # request's own re-check (it sees this batch's committed payments).
        if not await conn.fetchval(_ANY_PARKED, refs):
            return
        results = await apply_parked(conn, refs, topic=settings.kafka_topic, actor="webhook")
        if any(r.outcome == Outcome.UPDATED for r in results):
            app[appkeys.OUTBOX_WAKE].ring()
            dedup = app.get(appkeys.DEDUP)
            if dedup is not None:
                for r in results:
                    dedup.forget(r.reference_number)

    existing = app.get(appkeys.AFTER_COMMIT)
    hooks: list[AfterCommit] = [] if existing is None else list(existing)
    hooks.append(apply_parked_hook)
    app[appkeys.AFTER_COMMIT] = hooks
