"""Dead letters of the outbox for the command line: list them and put them back in line.

The SQL is shared with the ops API and lives in `gateway.db.dead_letters` (`gateway/` never
imports `workers/`); this module gives the CLI (and any worker-side caller) the
signatures it uses. Replaying resets a row as if it had just been written (attempts 0,
due now, error cleared), so the relay publishes it, with its original event_id, on its
next round; each replayed row gets an audit_log row (`action='dlq_replay'`, the actor).

Replay and order: a dead letter does not hold back the later events of its key, so a
replayed event may reach consumers after newer events of the same payment (see
workers/outbox.py).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from gateway.db import dead_letters as dlq_store


async def list_dead_letters(pool: asyncpg.Pool, limit: int = 100) -> list[dict[str, Any]]:
    """The oldest `limit` dead letters, JSON-ready, without their payloads."""
    return await dlq_store.list_dead_letters(pool, limit)


async def count_dead_letters(pool: asyncpg.Pool) -> int:
    value = await pool.fetchval("SELECT payment_service.outbox_dead_letters()")
    return int(value)


async def replay(pool: asyncpg.Pool, ids: list[int] | None, *, all_: bool, actor: str) -> int:
    """Reset the given dead letters (or all of them) for publishing; return how many.

    Ids that are not dead letters (already replayed, published, unknown) are ignored, so
    a replay is safe to repeat.
    """
    if not actor:
        raise ValueError("a replay needs an actor for the audit log")
    return len(await dlq_store.replay(pool, ids or (), all_=all_, actor=actor))
