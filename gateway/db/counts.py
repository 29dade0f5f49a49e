"""The counts operators watch, each written once: `/health`, the gauges, the stats
endpoint, the workers and the CLI all ask here.

Each is cheap by construction: the event counts are SQL functions planned onto their
indexes (sql/005, sql/170: the event log past each lane's cursor, the outbox's partial
indexes), the staging backlog reads the partial index on unprocessed
rows, and DEFAULT partitions are normally empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import TypeAlias

import asyncpg

from gateway.db.tables import PARTITIONED_TABLES, SCHEMA, quote_ident

Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection

# Counting a backlog is O(rows): past this many the pending count stops (the age of the
# oldest event, an index lookup, is what the alert watches). With no relay draining the
# outbox at 5,000/s, a cap of 100,000 made every refresh a 100-300 ms scan that stole the
# writers' CPU: p99 102-147 ms against 65-67 ms with this cap, two pairs of 60 s runs.
PENDING_COUNT_MAX = 10_000

_STAGING_BACKLOG = (
    "(SELECT count(*) FROM payment_service.payment_staging WHERE processed IS NOT TRUE)"
)
_LAST_STAGING_RUN = "(SELECT max(started_at) FROM payment_service.staging_process_log)"
_DEAD_LETTERS = "payment_service.outbox_dead_letters()"


def _default_rows_sql(schema: str) -> str:
    return ", ".join(
        f"(SELECT count(*) FROM {quote_ident(schema)}.{quote_ident(t + '_default')}) AS {t}"
        for t in PARTITIONED_TABLES
    )


_HEALTH = f"SELECT {_default_rows_sql(SCHEMA)}, {_DEAD_LETTERS} AS dead"

_OUTBOX = f"""
SELECT e.pending, extract(epoch FROM now() - e.oldest) AS oldest_age, {_STAGING_BACKLOG} AS backlog
FROM payment_service.events_pending({PENDING_COUNT_MAX}) e
"""

_STAGING = f"SELECT {_STAGING_BACKLOG} AS backlog, {_LAST_STAGING_RUN} AS last_run"

_STATS = f"""
SELECT
    (SELECT coalesce(sum(processed_records), 0) FROM payment_service.staging_process_log
      WHERE started_at >= $1) AS processed_today,
    (SELECT avg(duration_ms) FROM payment_service.staging_process_log
      WHERE started_at >= $1 AND completed_at IS NOT NULL) AS average_batch_ms,
    {_STAGING_BACKLOG} AS pending_count
"""

_WEBHOOKS_TODAY = """
SELECT outcome, count(*) AS n FROM payment_service.webhook_events
WHERE received_at >= $1 GROUP BY outcome
"""


# Every webhook answered (sql/152), kept this many days.
OUTCOME_DAYS_KEPT = 400
_ADD_OUTCOMES = f"""
WITH pruned AS (
    DELETE FROM payment_service.webhook_outcomes
    WHERE day < (now() AT TIME ZONE 'UTC')::date - {OUTCOME_DAYS_KEPT}
)
INSERT INTO payment_service.webhook_outcomes AS w (day, channel, outcome, answered)
SELECT (now() AT TIME ZONE 'UTC')::date, c, o, n
FROM unnest($1::text[], $2::text[], $3::bigint[]) AS t(c, o, n)
ON CONFLICT (day, channel, outcome) DO UPDATE SET answered = w.answered + EXCLUDED.answered
"""

_ANSWERED_ON = """
SELECT outcome, sum(answered)::bigint AS n FROM payment_service.webhook_outcomes
WHERE day = $1 GROUP BY outcome
"""


async def add_webhook_outcomes(
    db: Executor, answered: Mapping[tuple[str, str], int], timeout: float
) -> None:
    """Add (channel, outcome) -> count to today's row of each (UTC)."""
    keys = sorted(answered)  # the same row order in every process: no deadlock between them
    await db.execute(
        _ADD_OUTCOMES, [k[0] for k in keys], [k[1] for k in keys], [answered[k] for k in keys],
        timeout=timeout,
    )  # fmt: skip


async def webhooks_answered(db: Executor, day: date, timeout: float) -> dict[str, int]:
    """Webhooks answered on `day` (UTC) by every instance, by outcome: refusals included."""
    rows = await db.fetch(_ANSWERED_ON, day, timeout=timeout)
    return {r["outcome"]: int(r["n"]) for r in rows}


async def default_partition_rows(db: Executor, schema: str = SCHEMA) -> dict[str, int]:
    """Rows sitting in each DEFAULT partition (partition maintenance moves them)."""
    row = await db.fetchrow(f"SELECT {_default_rows_sql(schema)}")
    assert row is not None
    return {t: int(row[t]) for t in PARTITIONED_TABLES}


async def health_counts(db: Executor, timeout: float) -> tuple[dict[str, int], int]:
    """DEFAULT-partition rows and dead letters, in one round trip (asked on every /health)."""
    row = await db.fetchrow(_HEALTH, timeout=timeout)
    assert row is not None
    return {t: int(row[t]) for t in PARTITIONED_TABLES}, int(row["dead"])


async def dead_letters(db: Executor) -> int:
    return int(await db.fetchval(f"SELECT {_DEAD_LETTERS}"))


async def outbox_and_backlog(db: Executor, timeout: float) -> tuple[int, float, int]:
    """Events not yet published (the log's and the outbox's, capped at PENDING_COUNT_MAX),
    the oldest one's age in seconds, and the staging backlog."""
    row = await db.fetchrow(_OUTBOX, timeout=timeout)
    assert row is not None
    return int(row["pending"]), float(row["oldest_age"] or 0.0), int(row["backlog"])


async def staging_state(db: Executor, timeout: float) -> tuple[int, datetime | None]:
    """The staging backlog and when the last batch started."""
    row = await db.fetchrow(_STAGING, timeout=timeout)
    assert row is not None
    return int(row["backlog"]), row["last_run"]


async def staging_today(db: Executor, since: datetime, timeout: float) -> asyncpg.Record:
    """processed_today, average_batch_ms and pending_count for the stats endpoint."""
    row = await db.fetchrow(_STATS, since, timeout=timeout)
    assert row is not None
    return row


async def webhooks_today(db: Executor, since: datetime, timeout: float) -> dict[str, int]:
    """Deliveries that reached the database since `since`, by outcome."""
    rows = await db.fetch(_WEBHOOKS_TODAY, since, timeout=timeout)
    return {r["outcome"]: int(r["n"]) for r in rows}
