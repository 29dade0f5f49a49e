"""Dead letters of the outbox: list them and put them back in line.

Shared by `paygate dlq` and the ops API. A dead-lettered row stays in the outbox with
its payload, attempts and last error; replaying it resets the row as if it had just
been written (attempts 0, due now), so the relay publishes it on its next round. Each
replayed row gets an audit_log row (`action='dlq_replay'`, the actor, the outbox id,
event id and the error it died with), in the same transaction as the reset.

Replay and order: a dead letter does not hold back the later events of its key, so a
replayed event may reach consumers after newer events of the same payment (see
workers/outbox.py).
"""

from __future__ import annotations

from typing import Any

import asyncpg

_LIST = """
SELECT id, event_id, event_type, topic, key, attempts, last_error, octet_length(payload) AS size,
       created_at, dead_lettered_at
FROM payment_service.outbox
WHERE dead_lettered_at IS NOT NULL
ORDER BY id
LIMIT $1
"""

_REPLAY = """
WITH replayed AS (
    UPDATE payment_service.outbox
    SET attempts = 0, next_attempt_at = now(), dead_lettered_at = NULL, last_error = NULL
    WHERE id IN (
        SELECT id FROM payment_service.outbox
        WHERE dead_lettered_at IS NOT NULL AND ($1::bool OR id = ANY($2::bigint[]))
        ORDER BY id
        FOR UPDATE
    )
    RETURNING id, event_id, event_type, key
), before AS (
    SELECT o.id, o.last_error, o.attempts FROM payment_service.outbox o
    JOIN replayed r ON r.id = o.id
), aud AS (
    INSERT INTO payment_service.audit_log (actor, action, reference_number, details)
    SELECT $3, 'dlq_replay', r.key,
           jsonb_build_object('outbox_id', r.id, 'event_id', r.event_id::text,
                              'event_type', r.event_type, 'attempts', b.attempts,
                              'last_error', b.last_error)
    FROM replayed r JOIN before b ON b.id = r.id
)
SELECT count(*) FROM replayed
"""


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


async def list_dead_letters(pool: asyncpg.Pool, limit: int = 100) -> list[dict[str, Any]]:
    """The oldest `limit` dead letters, JSON-ready (payloads left out: size only)."""
    rows = await pool.fetch(_LIST, limit)
    return [
        {
            "id": r["id"],
            "event_id": str(r["event_id"]),
            "event_type": r["event_type"],
            "topic": r["topic"],
            "key": r["key"],
            "attempts": r["attempts"],
            "last_error": r["last_error"],
            "payload_bytes": r["size"],
            "created_at": _iso(r["created_at"]),
            "dead_lettered_at": _iso(r["dead_lettered_at"]),
        }
        for r in rows
    ]


async def count_dead_letters(pool: asyncpg.Pool) -> int:
    value = await pool.fetchval(
        "SELECT count(*) FROM payment_service.outbox WHERE dead_lettered_at IS NOT NULL"
    )
    return int(value)


async def replay(pool: asyncpg.Pool, ids: list[int] | None, *, all_: bool, actor: str) -> int:
    """Reset the given dead letters (or all of them) for publishing; return how many.

    Ids that are not dead letters (already replayed, published, unknown) are ignored,
    so a replay is safe to repeat.
    """
    if not all_ and not ids:
        return 0
    if not actor:
        raise ValueError("a replay needs an actor for the audit log")
    async with pool.acquire() as conn, conn.transaction():
        count = await conn.fetchval(_REPLAY, all_, list(ids or []), actor)
    return int(count)
