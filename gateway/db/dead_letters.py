"""Dead-lettered outbox rows: count them, list them and put them back in line.

The ops API and the `paygate dlq` command call the same functions. A replay resets the
row as if it had just been written (attempts 0, due now, error cleared), so the relay
publishes it with its original event_id (consumers drop a redelivery by that id), and
audits who did it. Ids that are not dead letters (already replayed, published, unknown)
are ignored, so a replay is safe to repeat.

Replay and order: a dead letter does not hold back the later events of its key, so a
replayed event may reach consumers after newer events of the same payment (see
workers/outbox.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from gateway.db import counts

_LIST = """
SELECT id, event_id, event_type, topic, key, attempts, last_error, dead_lettered_at, created_at
FROM payment_service.outbox
WHERE dead_lettered_at IS NOT NULL
ORDER BY id
LIMIT $1
"""

_REPLAY = """
WITH before AS (  -- the statement's snapshot: why each row died, before the reset
    SELECT id, attempts, last_error, dead_lettered_at FROM payment_service.outbox
    WHERE dead_lettered_at IS NOT NULL AND ($1 OR id = ANY($2::bigint[]))
), replayed AS (
    UPDATE payment_service.outbox o
    SET dead_lettered_at = NULL, attempts = 0, next_attempt_at = now(), last_error = NULL
    FROM before b
    WHERE o.id = b.id AND o.dead_lettered_at IS NOT NULL
    RETURNING o.id, o.event_id, o.event_type, o.key, b.attempts, b.last_error,
              b.dead_lettered_at
), aud AS (
    INSERT INTO payment_service.audit_log (actor, action, reference_number, details)
    SELECT $3, 'dlq_replay', key,
           jsonb_build_object('outbox_id', id, 'event_id', event_id, 'event_type', event_type,
                              'attempts', attempts, 'last_error', last_error,
                              'dead_lettered_at', dead_lettered_at)
    FROM replayed
)
SELECT id FROM replayed ORDER BY id
"""


async def list_dead_letters(pool: asyncpg.Pool, limit: int = 100) -> list[dict[str, Any]]:
    """The oldest dead letters first, without their payloads (they may carry customer data)."""
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
            "dead_lettered_at": r["dead_lettered_at"].isoformat(),
            "created_at": r["created_at"].isoformat(),
        }
        for r in rows
    ]


async def count(pool: asyncpg.Pool) -> int:
    return await counts.dead_letters(pool)


async def replay(
    pool: asyncpg.Pool, ids: Sequence[int] = (), *, all_: bool = False, actor: str
) -> list[int]:
    """Re-queue the given dead letters (or all of them); returns the ids re-queued."""
    if not actor:
        raise ValueError("a replay needs an actor for the audit log")
    if not all_ and not ids:
        return []
    rows = await pool.fetch(_REPLAY, all_, list(ids), actor[:255])
    return [r["id"] for r in rows]
