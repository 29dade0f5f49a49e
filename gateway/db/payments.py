"""Recording payments in bulk: the webhook group-commit writer's one statement.

(The staging processor writes the same rows with its own set-based SQL,
workers/staging_sql.py.) One statement (data-modifying CTEs, so one round trip and one
atomic unit) claims the references with `INSERT ... ON CONFLICT DO NOTHING RETURNING`,
and only for the references it won inserts the payment, its outbox event (payload built
by Postgres: gateway/events_sql.py), its audit row and the raw delivery.
`payment_references` is the authority: a reference can be claimed once, whatever the
caches said and however many instances race.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from gateway.db.events_sql import event_payload_sql, recorded_event_id_sql
from gateway.domain import events
from gateway.domain.ids import uuid7
from gateway.domain.model import Payment

_RECORD = f"""
WITH input AS (
    SELECT * FROM unnest(
        $1::uuid[], $2::text[], $3::text[], $4::text[], $5::numeric[], $6::timestamp[],
        $7::text[], $8::jsonb[], $9::text[], $10::timestamptz[], $11::text[], $12::text[],
        $13::text[], $14::bytea[]
    ) AS t(id, ref, account, cif, amount, payment_date, channel, metadata, status, event_at,
           hash, delivery_channel, delivery_id, body)
), claimed AS (
    INSERT INTO payment_service.payment_references
        (reference_number, payment_id, payment_date, payload_hash)
    SELECT ref, id, payment_date, hash FROM input ORDER BY ref
    ON CONFLICT DO NOTHING
    RETURNING payment_id
), won AS MATERIALIZED (
    SELECT i.*, i.id AS payment_id, {recorded_event_id_sql("i.id")} AS event_id
    FROM input i JOIN claimed c ON c.payment_id = i.id
), paid AS (
    INSERT INTO payment_service.payments
        (id, reference_number, loan_account_number, cif, amount, payment_date,
         payment_channel, source, metadata, status, provider_event_at)
    SELECT id, ref, account, cif, amount, payment_date, channel, $15, metadata, status, event_at
    FROM won
), evt AS (
    INSERT INTO payment_service.outbox (event_id, event_type, topic, key, payload)
    SELECT w.event_id, '{events.RECORDED}', $16, w.ref,
           {event_payload_sql("w", source="$15::text", status="w.status")}
    FROM won w
), aud AS (
    INSERT INTO payment_service.audit_log (actor, action, reference_number, payment_id, details)
    SELECT $17, 'created', ref, id, jsonb_build_object('source', $15::text, 'status', status)
    FROM won
), raw AS (
    INSERT INTO payment_service.webhook_events
        (channel, delivery_id, reference_number, payment_id, outcome, body)
    SELECT delivery_channel, delivery_id, ref, id, 'created', body FROM won
    WHERE body IS NOT NULL
)
SELECT id, EXISTS (SELECT 1 FROM payment_service.pending_status_updates s
               WHERE s.reference_number = won.ref) AS parked
FROM won
"""

_EXISTING = """
SELECT r.reference_number, r.payment_id, r.payload_hash, p.status, p.provider_event_at
FROM payment_service.payment_references r
LEFT JOIN payment_service.payments p ON p.id = r.payment_id AND p.payment_date = r.payment_date
WHERE r.reference_number = ANY($1::text[])
"""

_LOSERS = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[],
                         $6::bytea[], $7::jsonb[])
        AS t(ref, payment_id, outcome, channel, delivery_id, body, details)
), aud AS (
    INSERT INTO payment_service.audit_log (actor, action, reference_number, payment_id, details)
    SELECT $8, 'conflict', ref, payment_id, details FROM input WHERE outcome = 'conflict'
)
INSERT INTO payment_service.webhook_events
    (channel, delivery_id, reference_number, payment_id, outcome, body)
SELECT channel, delivery_id, ref, payment_id, outcome, body FROM input WHERE body IS NOT NULL
"""


@dataclass(slots=True)
class Candidate:
    """A validated payment on its way in, with where it came from."""

    payment: Payment
    channel: str | None = None
    delivery_id: str | None = None
    body: bytes | None = None  # the raw verified delivery, kept in webhook_events
    payment_id: uuid.UUID = field(default_factory=uuid7)


@dataclass(frozen=True, slots=True)
class Existing:
    payment_id: str
    payload_hash: str
    status: str | None
    provider_event_at: datetime | None


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    created: set[uuid.UUID]  # payment ids of the candidates that were recorded now
    existing: dict[str, Existing]  # reference -> what was already there, for the others
    parked: set[uuid.UUID] = field(default_factory=set)  # created ones with status updates waiting


async def record_batch(
    conn: asyncpg.Connection,
    candidates: Sequence[Candidate],
    *,
    source: str,
    topic: str,
    actor: str,
) -> BatchOutcome:
    """Record the candidates whose reference is new; report what exists for the rest.

    Candidates must carry distinct references (coalesce first: an `ON CONFLICT` insert
    returns a reference once even if the input holds it twice). Rows are claimed in
    reference order so concurrent batches never deadlock on each other.
    """
    cols: list[list[object]] = [[] for _ in range(14)]
    for c in candidates:
        p = c.payment
        row = (
            c.payment_id, p.reference_number, p.loan_account_number, p.cif, p.amount,
            p.payment_date, p.payment_channel, p.metadata, p.status, p.provider_event_at,
            p.payload_hash, c.channel, c.delivery_id, c.body,
        )  # fmt: skip
        for col, value in zip(cols, row, strict=True):
            col.append(value)
    rows = await conn.fetch(_RECORD, *cols, source, topic, actor)
    created = {r["id"] for r in rows}
    parked = {r["id"] for r in rows if r["parked"]}
    lost = [c.payment.reference_number for c in candidates if c.payment_id not in created]
    existing: dict[str, Existing] = {}
    if lost:
        for r in await conn.fetch(_EXISTING, lost):
            existing[r["reference_number"]] = Existing(
                str(r["payment_id"]), r["payload_hash"], r["status"], r["provider_event_at"]
            )
    return BatchOutcome(created, existing, parked)


@dataclass(slots=True)
class Loser:
    """A delivery that did not create a payment: recorded for audit and replay."""

    reference: str
    payment_id: str
    outcome: str  # duplicate | conflict | updated | stale
    channel: str | None
    delivery_id: str | None
    body: bytes | None
    details: dict[str, object] | None = None


async def record_losers(conn: asyncpg.Connection, losers: Sequence[Loser], *, actor: str) -> None:
    """Keep the raw deliveries of duplicates and conflicts, and audit each conflict."""
    if not losers:
        return
    await conn.execute(
        _LOSERS,
        [x.reference for x in losers],
        [x.payment_id for x in losers],
        [x.outcome for x in losers],
        [x.channel for x in losers],
        [x.delivery_id for x in losers],
        [x.body for x in losers],
        [x.details for x in losers],
        actor,
    )
