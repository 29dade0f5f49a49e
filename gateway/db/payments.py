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
from datetime import datetime
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
# The amount travels as its decimal text (`str(Decimal)`, exact) and the instant as naive
# UTC: asyncpg's binary numeric and timestamptz encoders cost 1.1 and 0.8 µs a value,
# text and timestamp 0.3. An array sent as NULL (every value NULL in this batch: the
# trace, the metadata, ...) is padded by unnest to NULLs, and costs nothing per payment.
# One row comes back, with the few ids that did not go in, not a row per payment.
_RECORD = f"""
WITH input AS (
    SELECT payment_id, ref, account, cif, amount::numeric AS amount, payment_date, channel,
           metadata, status, event_at, hash, delivery_channel, delivery_id, body, currency,
           payment_at AT TIME ZONE 'UTC' AS payment_at, traceparent
    FROM unnest(
        $1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamp[],
        $7::text[], $8::jsonb[], $9::text[], $10::timestamptz[], $11::text[], $12::text[],
        $13::text[], $14::bytea[], $18::text[], $19::timestamp[], $20::text[]
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
SELECT ARRAY(SELECT payment_id FROM input EXCEPT ALL SELECT payment_id FROM won) AS lost,
       ARRAY(SELECT payment_id FROM won WHERE ref = ANY(parked.refs)) AS parked
FROM parked
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
    lost: set[uuid.UUID]  # payment ids of the candidates whose reference was already taken
    existing: dict[str, Existing]  # reference -> what was already there, for those
    parked: set[uuid.UUID] = field(default_factory=set)  # recorded ones with status updates waiting
    recorded: int = 0  # how many candidates were recorded now


def _column(values: list[Any]) -> list[Any] | None:
    """A batch's values of one column, or None when every one is None (see `_RECORD`)."""
    return None if values.count(None) == len(values) else values


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
    payments = [c.payment for c in candidates]
    row = await conn.fetchrow(
        _RECORD,
        [c.payment_id for c in candidates],
        [p.reference_number for p in payments],
        [p.loan_account_number for p in payments],
        [p.cif for p in payments],
        [str(p.amount) for p in payments],
        [p.payment_date for p in payments],
        _column([p.payment_channel for p in payments]),
        _column([p.metadata for p in payments]),
        [p.status for p in payments],
        _column([p.provider_event_at for p in payments]),
        [p.payload_hash for p in payments],
        _column([c.channel for c in candidates]),
        _column([c.delivery_id for c in candidates]),
        _column([c.body for c in candidates]),
        source,
        topic,
        actor,
        _column([p.currency for p in payments]),
        _column([p.payment_at for p in payments]),
        _column([None if c.trace is None else tracing.traceparent(c.trace) for c in candidates]),
    )
    assert row is not None  # one row, always
    lost_ids = set(row["lost"])
    lost = [c.payment.reference_number for c in candidates if c.payment_id in lost_ids]
    existing: dict[str, Existing] = {}
    if lost:
        for r in await conn.fetch(_EXISTING, lost):
            existing[r["reference_number"]] = Existing(
                str(r["payment_id"]), r["payload_hash"], r["status"], r["provider_event_at"]
            )
    return BatchOutcome(lost_ids, existing, set(row["parked"]), len(candidates) - len(lost))


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
