"""Recording payments in bulk: the webhook group-commit writer's one statement.

One statement (data-modifying CTEs, so one round trip and one atomic unit): the chain
of gateway.db.recording_sql (shared with the staging batch) claims the references and
records the winners' payments, outbox events and audit rows, and this statement adds
their raw deliveries and asks which of them have status updates parked, after taking
their parking locks (`parked_among`, sql/120: a request parking an update for one of
them either committed before, and is seen, or waits for this commit, and sees the
payment). The deliveries that lost (duplicates, conflicts) are kept by
`record_losers`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from gateway.db.recording_sql import record_ctes
from gateway.domain.ids import uuid7
from gateway.domain.model import Payment
from gateway.observability import tracing

_CHAIN = record_ctes(
    source="$15::text", status="w.status", event_at="w.event_at", topic="$16", actor="$17",
    traceparent="w.traceparent",
)  # fmt: skip
_RECORD = f"""
WITH input AS (
    SELECT * FROM unnest(
        $1::uuid[], $2::text[], $3::text[], $4::text[], $5::numeric[], $6::timestamp[],
        $7::text[], $8::jsonb[], $9::text[], $10::timestamptz[], $11::text[], $12::text[],
        $13::text[], $14::bytea[], $18::text[], $19::timestamptz[], $20::text[]
    ) AS t(payment_id, ref, account, cif, amount, payment_date, channel, metadata, status,
           event_at, hash, delivery_channel, delivery_id, body, currency, payment_at,
           traceparent)
), {_CHAIN}, raw AS (
    INSERT INTO payment_service.webhook_events
        (channel, delivery_id, reference_number, payment_id, outcome, body)
    SELECT delivery_channel, delivery_id, ref, payment_id, 'created', body FROM won
    WHERE body IS NOT NULL
), parked AS MATERIALIZED (
    SELECT payment_service.parked_among(ARRAY(SELECT ref FROM won)) AS refs
)
SELECT won.payment_id AS id, won.ref = ANY(parked.refs) AS parked
FROM won CROSS JOIN parked
"""

_EXISTING = """
SELECT r.reference_number, r.payment_id, encode(r.payload_hash, 'hex') AS payload_hash, p.status,
       p.provider_event_at
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
    trace: Any = None  # the request's span context while tracing (gateway.observability)


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
    cols: list[list[object]] = [[] for _ in range(17)]
    for c in candidates:
        p = c.payment
        row = (
            c.payment_id, p.reference_number, p.loan_account_number, p.cif, p.amount,
            p.payment_date, p.payment_channel, p.metadata, p.status, p.provider_event_at,
            p.payload_hash, c.channel, c.delivery_id, c.body, p.currency,
            None if p.payment_at is None else p.payment_at.replace(tzinfo=UTC),
            None if c.trace is None else tracing.traceparent(c.trace),
        )  # fmt: skip
        for col, value in zip(cols, row, strict=True):
            col.append(value)
    rows = await conn.fetch(_RECORD, *cols[:14], source, topic, actor, *cols[14:])
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


_RECENT = """
SELECT r.reference_number, r.payment_id, encode(r.payload_hash, 'hex') AS payload_hash, p.status
FROM (SELECT * FROM payment_service.payment_references ORDER BY created_at DESC LIMIT $1) r
JOIN payment_service.payments p ON p.id = r.payment_id AND p.payment_date = r.payment_date
"""


async def recent_references(pool: asyncpg.Pool, count: int | float) -> list[asyncpg.Record]:
    """The newest `count` references with their payment's status (to warm the L1 cache)."""
    return await pool.fetch(_RECENT, count)


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
