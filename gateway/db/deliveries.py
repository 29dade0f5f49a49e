"""Stored deliveries (webhook_events): the refused ones written here, every one listed,
read back with its raw body, and the replays of each.

The accepted deliveries are written by the recording statement (gateway.db.payments) and
the status path (gateway.db.status); a delivery refused after its signature was verified
(422, an invalid JSON body, an event type the channel ignores) is written here, in
batches, by gateway.ingest.refusals.

Lists are newest first in keyset pages on (received_at, id), on idx_webhook_events_received
(refused outcomes: the partial idx_webhook_events_refused; a reference: its payments' ids
on idx_webhook_events_payment, and the deliveries of no payment on
idx_webhook_events_unmatched). A channel filter is applied to the rows the walk reads.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.db import keyset
from gateway.db.payment_search import reference_equals

# Outcomes a stored delivery can have, from every path that stores one.
REFUSED = ("invalid", "invalid_json", "ignored")
OUTCOMES = ("created", "duplicate", "conflict", "updated", "stale", "deferred", *REFUSED)
# Those in the partial index idx_webhook_events_refused (sql/070).
_INDEXED_REFUSED = ("invalid", "invalid_json", "ignored", "conflict")

LIST_COLUMNS = (
    "id, received_at, channel, delivery_id, reference_number, payment_id, outcome, "
    "octet_length(body) AS size, error"
)

_INSERT_REFUSED = """
INSERT INTO payment_service.webhook_events
    (channel, delivery_id, reference_number, outcome, body, error)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::jsonb[])
"""

_GET = f"""
SELECT {LIST_COLUMNS}, body FROM payment_service.webhook_events WHERE id = $1
"""

_REPLAYS = """
SELECT id, actor, status, outcome, payment_id, answer, created_at
FROM payment_service.delivery_replays WHERE delivery_id = $1 ORDER BY id
"""

_RECORD_REPLAY = """
WITH r AS (
    INSERT INTO payment_service.delivery_replays
        (delivery_id, actor, status, outcome, payment_id, answer)
    VALUES ($1, $2, $3, $4, $5, $6)
    RETURNING id, created_at
), aud AS (
    INSERT INTO payment_service.audit_log (actor, action, reference_number, payment_id, details)
    SELECT $2, 'delivery_replay', $7, $5,
           jsonb_build_object('delivery_id', $1::bigint, 'replay_id', r.id, 'status', $3::int,
                              'outcome', $4::text)
    FROM r
)
SELECT id, created_at FROM r
"""


@dataclass(frozen=True, slots=True)
class Refused:
    """A verified delivery that was refused or ignored, as it will be stored."""

    channel: str
    delivery_id: str | None
    reference_number: str | None
    outcome: str  # one of REFUSED
    body: bytes
    error: dict[str, Any]  # the answer's body


@dataclass(frozen=True)
class DeliveryFilter:
    channel: str | None = None
    outcome: str | None = None
    reference_number: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def insert_refused(conn: asyncpg.Connection, rows: Sequence[Refused]) -> None:
    await conn.execute(
        _INSERT_REFUSED,
        [r.channel for r in rows],
        [r.delivery_id for r in rows],
        [r.reference_number for r in rows],
        [r.outcome for r in rows],
        [r.body for r in rows],
        [r.error for r in rows],
    )


def _of_reference(ref: str) -> str:
    """The deliveries of one reference, read on indexes (sql/171): those of its payments
    by payment id, and those that matched no payment by reference."""
    return f"""(
    SELECT * FROM payment_service.webhook_events
    WHERE payment_id = ANY (ARRAY(
        SELECT payment_id FROM payment_service.payment_references WHERE reference_number = {ref}
        UNION SELECT id FROM payment_service.payments
        WHERE {reference_equals("reference_number", ref)}))
    UNION ALL
    SELECT * FROM payment_service.webhook_events
    WHERE payment_id IS NULL AND reference_number = {ref}
) webhook_events"""


def list_sql(
    f: DeliveryFilter,
    after: tuple[datetime, int] | None,
    limit: int,
    *,
    oldest_first: bool = False,
    columns: str = LIST_COLUMNS,
) -> tuple[str, list[Any]]:
    where: list[str] = []
    params = keyset.Params()
    arg = params.add
    if f.outcome is not None:
        if f.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {f.outcome!r}")
        where.append(f"outcome = '{f.outcome}'")  # a literal: proves the partial index
        if f.outcome in _INDEXED_REFUSED:
            where.append("outcome IN (" + ", ".join(f"'{o}'" for o in _INDEXED_REFUSED) + ")")
    if f.channel is not None:
        where.append(f"channel = {arg(f.channel)}")
    source = "payment_service.webhook_events"
    if f.reference_number is not None:
        ref = arg(f.reference_number)
        where.append(f"reference_number = {ref}")
        source = _of_reference(ref)
    if f.since is not None:
        where.append(f"received_at >= {arg(f.since)}")
    if f.until is not None:
        where.append(f"received_at < {arg(f.until)}")
    if after is not None:
        at, last = arg(after[0]), arg(after[1])
        where.append(keyset.after("received_at", at, last, ascending=oldest_first))
    order = "received_at, id" if oldest_first else "received_at DESC, id DESC"
    sql = (
        f"SELECT {columns} FROM {source}"
        f" WHERE {' AND '.join(where) or 'TRUE'} ORDER BY {order} LIMIT {arg(limit)}"
    )
    return sql, params.values


async def list_deliveries(
    pool: asyncpg.Pool,
    f: DeliveryFilter,
    after: tuple[datetime, int] | None,
    limit: int,
    *,
    oldest_first: bool = False,
) -> list[asyncpg.Record]:
    sql, args = list_sql(f, after, limit, oldest_first=oldest_first)
    return await pool.fetch(sql, *args)


async def get_delivery(pool: asyncpg.Pool, delivery_id: int) -> asyncpg.Record | None:
    return await pool.fetchrow(_GET, delivery_id)


async def replays_of(pool: asyncpg.Pool, delivery_id: int) -> list[asyncpg.Record]:
    return await pool.fetch(_REPLAYS, delivery_id)


async def record_replay(
    pool: asyncpg.Pool,
    delivery_id: int,
    *,
    actor: str,
    status: int,
    outcome: str,
    payment_id: str | None,
    answer: dict[str, Any],
    reference_number: str | None,
) -> asyncpg.Record:
    """The replay and its audit row, in one statement."""
    row = await pool.fetchrow(
        _RECORD_REPLAY, delivery_id, actor[:255], status, outcome[:32], payment_id, answer,
        reference_number,
    )  # fmt: skip
    assert row is not None
    return row


async def reference_of_payment(pool: asyncpg.Pool, payment_id: str) -> str | None:
    """The reference of a payment (each monthly partition's primary key leads with the id)."""
    return await pool.fetchval(
        "SELECT reference_number FROM payment_service.payments WHERE id = $1 LIMIT 1",
        uuid.UUID(payment_id),
    )


async def known_reference(pool: asyncpg.Pool, reference: str) -> asyncpg.Record | None:
    """What payment_references holds for a reference (a dry run's "would it be new?")."""
    return await pool.fetchrow(
        "SELECT payment_id, encode(payload_hash, 'hex') AS payload_hash"
        " FROM payment_service.payment_references"
        " WHERE reference_number = $1",
        reference,
    )
