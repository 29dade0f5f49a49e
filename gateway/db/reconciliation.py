"""Statement reconciliation: a bank or provider statement (CSV) against our payments.

Webhooks are best effort (seed 002); the statement is the other side's ledger, and
reconciling against it is the safety net. The work is set-based so a million-line
statement stays a matter of seconds and of flat memory:

1. the upload is streamed and parsed chunk by chunk (pure code below: column mapping,
   Decimal amounts, dates, line numbers of malformed lines);
2. good lines are COPYed into a session TEMP table in chunks;
3. one INSERT ... SELECT classifies every line (matched, matched_with_fee,
   amount_mismatch, status_mismatch, missing_internal) and one more finds the payments
   of the period that the statement lacks (missing_in_statement).

Operators act on the exceptions through the run's items (API, CSV export). Events are
deliberately coarse: one `reconciliation.completed` event per run with the
counts, plus an audit_log row for the first EXCEPTIONS_AUDITED exceptions. One event
per mismatch would flood the topic when a statement is badly off (the usual case for
a wrong period or mapping), and the items table already is the work list.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from gateway.db.errors import describe_text
from gateway.db.event_log import append_event_sql
from gateway.domain.statements import (
    CATEGORIES,
    EXCEPTIONS,
    Record,
    StatementError,
    StatementOptions,
    StatementParser,
)
from gateway.observability import metrics

log = logging.getLogger(__name__)

COPY_CHUNK = 50_000
EXCEPTIONS_AUDITED = 100
COMPLETED_EVENT = "reconciliation.completed"

# -- SQL -----------------------------------------------------------------------------------

_TEMP = """
DROP TABLE IF EXISTS pg_temp.recon_statement;
CREATE TEMP TABLE recon_statement (
    line_number      INTEGER NOT NULL,
    reference_number TEXT NOT NULL,
    amount           NUMERIC(15,2) NOT NULL,
    payment_date     TIMESTAMP NOT NULL,
    status           TEXT,
    currency         TEXT
)
"""

_DUPLICATES = """
WITH d AS (
    SELECT reference_number, min(line_number) AS first
    FROM recon_statement GROUP BY reference_number HAVING count(*) > 1
)
DELETE FROM recon_statement s USING d
WHERE s.reference_number = d.reference_number AND s.line_number > d.first
RETURNING s.line_number, d.first
"""

_MATCH = """
WITH c AS (
    SELECT s.line_number, s.reference_number, p.id AS payment_id,
           s.amount AS s_amount, p.amount AS p_amount, s.status AS s_status, p.status AS p_status,
           CASE
             WHEN p.id IS NULL THEN 'missing_internal'
             WHEN s.amount <> p.amount AND abs(s.amount - p.amount) > $2
                  AND NOT ($3 AND abs(s.amount - (p.amount - round(p.amount * $4 / 100 + $5, 2)))
                                  <= $2)
               THEN 'amount_mismatch'
             WHEN s.status IS NOT NULL AND s.status <> p.status THEN 'status_mismatch'
             WHEN s.amount <> p.amount THEN 'matched_with_fee'
             ELSE 'matched'
           END AS category,
           s.currency, r.reference_number IS NOT NULL AS referenced
    FROM recon_statement s
    LEFT JOIN payment_service.payment_references r ON r.reference_number = s.reference_number
    LEFT JOIN payment_service.payments p
           ON p.id = r.payment_id AND p.payment_date = r.payment_date
), ins AS (
    INSERT INTO payment_service.reconciliation_items
        (run_id, category, reference_number, payment_id, line_number, statement_amount,
         internal_amount, difference, statement_status, internal_status, details)
    SELECT $1, category, reference_number, payment_id, line_number, s_amount, p_amount,
           s_amount - p_amount, s_status, p_status,
           CASE WHEN currency IS NOT NULL OR (payment_id IS NULL AND referenced)
                THEN jsonb_strip_nulls(jsonb_build_object(
                    'currency', currency,
                    'note', CASE WHEN payment_id IS NULL AND referenced
                                 THEN 'reference known, payment row not found' END))
           END
    FROM c WHERE $6 OR category <> 'matched'
)
SELECT category, count(*) AS n FROM c GROUP BY category
"""

_MISSING_IN_STATEMENT = """
WITH ins AS (
    INSERT INTO payment_service.reconciliation_items
        (run_id, category, reference_number, payment_id, internal_amount, internal_status)
    SELECT $1, 'missing_in_statement', p.reference_number, p.id, p.amount, p.status
    FROM payment_service.payments p
    WHERE p.payment_date >= $2 AND p.payment_date < $3 AND p.status <> 'failed'
      AND NOT EXISTS (SELECT 1 FROM recon_statement s WHERE s.reference_number = p.reference_number)
    RETURNING 1
)
SELECT count(*) FROM ins
"""

_AUDIT_EXCEPTIONS = """
INSERT INTO payment_service.audit_log (actor, action, reference_number, payment_id, details)
SELECT $2, 'reconciliation_exception', reference_number, payment_id,
       jsonb_build_object('run_id', run_id, 'category', category, 'difference', difference,
                          'line_number', line_number)
FROM payment_service.reconciliation_items
WHERE run_id = $1 AND category <> ALL($3::text[])
ORDER BY id LIMIT $4
"""

_COMPLETED = append_event_sql(event_id="$1", event_type="$2", topic="$3", key="$4", payload="$5")

_FINISH = """
UPDATE payment_service.reconciliation_runs
SET status = $2, summary = $3, errors = $4, total_lines = $5, malformed_lines = $6,
    period_start = $7, period_end = $8, completed_at = now()
WHERE id = $1
"""

_LONG = 3600.0  # seconds: one matching statement over millions of rows may outlast the pool default


async def reconcile_statement(
    pool: asyncpg.Pool,
    chunks: AsyncIterable[bytes],
    options: StatementOptions,
    *,
    topic: str,
    actor: str,
) -> dict[str, Any]:
    """Import a statement and match it; returns the run summary (also stored on the run).

    A statement that cannot be read at all (no header, a required column missing)
    marks the run failed and raises StatementError; malformed lines never do.
    """
    started = time.perf_counter()
    run_id = await pool.fetchval(
        "INSERT INTO payment_service.reconciliation_runs (kind, source, actor) "
        "VALUES ('statement', $1, $2) RETURNING id",
        (options.source or "upload")[:500], actor[:255],
    )  # fmt: skip
    parser = StatementParser(options)
    async with pool.acquire() as conn:
        try:
            await conn.execute(_TEMP)
            await _load(conn, parser, chunks)
            summary = await _match(conn, run_id, parser, options, topic=topic, actor=actor)
        except BaseException as exc:
            await _fail(pool, run_id, parser, exc)
            raise
        finally:
            await _drop_temp(conn)
    summary["duration_seconds"] = round(time.perf_counter() - started, 3)
    await pool.execute(
        "UPDATE payment_service.reconciliation_runs SET summary = $2 WHERE id = $1", run_id, summary
    )
    return summary


async def _load(
    conn: asyncpg.Connection, parser: StatementParser, chunks: AsyncIterable[bytes]
) -> None:
    buffer: list[Record] = []
    async for chunk in chunks:
        buffer.extend(parser.feed(chunk))
        if len(buffer) >= COPY_CHUNK:
            await _copy(conn, buffer)
            buffer = []
    buffer.extend(parser.finish())
    if buffer:
        await _copy(conn, buffer)


async def _copy(conn: asyncpg.Connection, records: list[Record]) -> None:
    await conn.copy_records_to_table(
        "recon_statement", records=records, schema_name="pg_temp", timeout=_LONG,
        columns=["line_number", "reference_number", "amount", "payment_date", "status", "currency"],
    )  # fmt: skip


async def _match(
    conn: asyncpg.Connection,
    run_id: uuid.UUID,
    parser: StatementParser,
    options: StatementOptions,
    *,
    topic: str,
    actor: str,
) -> dict[str, Any]:
    for row in await conn.fetch(_DUPLICATES, timeout=_LONG):
        parser.error(
            row["line_number"], f"duplicate reference_number (first on line {row['first']})"
        )
    await conn.execute("ANALYZE recon_statement", timeout=_LONG)
    first, last = await conn.fetchrow(
        "SELECT min(payment_date)::date, max(payment_date)::date FROM recon_statement"
    )
    start = options.period_start or first
    end = options.period_end or last

    counts = dict.fromkeys(CATEGORIES, 0)
    fee_rule = bool(options.fee_percent or options.fee_fixed)
    async with conn.transaction():
        await conn.execute("SET LOCAL work_mem = '256MB'")
        for row in await conn.fetch(
            _MATCH, run_id, options.tolerance, fee_rule, options.fee_percent, options.fee_fixed,
            options.keep_matched, timeout=_LONG,
        ):  # fmt: skip
            counts[row["category"]] = row["n"]
        if start is not None and end is not None:
            counts["missing_in_statement"] = await conn.fetchval(
                _MISSING_IN_STATEMENT, run_id, _midnight(start), _midnight(end) + timedelta(days=1),
                timeout=_LONG,
            )  # fmt: skip
        exceptions = sum(counts[c] for c in EXCEPTIONS)
        await conn.execute(
            _AUDIT_EXCEPTIONS, run_id, actor, ["matched", "matched_with_fee"], EXCEPTIONS_AUDITED
        )
        summary: dict[str, Any] = {
            "run_id": str(run_id),
            "status": "completed",
            "source": options.source,
            "total_lines": parser.total,
            "malformed_lines": parser.malformed,
            "period": {
                "start": start.isoformat() if start else None,
                "end": end.isoformat() if end else None,
            },
            "counts": counts,
            "exceptions": exceptions,
            "tolerance": str(options.tolerance),
            "fee_rule": {"percent": str(options.fee_percent), "fixed": str(options.fee_fixed)},
        }
        await _completed_event(conn, run_id, summary, topic)
        # The run itself is an ops action: who imported what, with its outcome.
        await conn.execute(
            "INSERT INTO payment_service.audit_log (actor, action, details)"
            " VALUES ($1, 'reconciliation_run', $2)",
            actor,
            {"run_id": str(run_id), "source": options.source, "counts": counts},
        )
        await conn.execute(
            _FINISH, run_id, "completed", summary, parser.errors, parser.total, parser.malformed,
            _midnight(start) if start else None, _midnight(end) if end else None,
        )  # fmt: skip
    for category, n in counts.items():
        if n:
            metrics.reconciliation_items.labels(category).inc(n)
    log.info("reconciliation run %s: %s", run_id, counts)
    return summary


async def _completed_event(
    conn: asyncpg.Connection, run_id: uuid.UUID, summary: dict[str, Any], topic: str
) -> None:
    event_id = uuid.uuid4()
    payload = {
        "event_id": str(event_id),
        "event_type": COMPLETED_EVENT,
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "run_id": str(run_id),
        "counts": summary["counts"],
        "exceptions": summary["exceptions"],
        "malformed_lines": summary["malformed_lines"],
        "period": summary["period"],
    }
    await conn.execute(
        _COMPLETED,
        event_id, COMPLETED_EVENT, topic, str(run_id), orjson.dumps(payload),
    )  # fmt: skip


async def _fail(
    pool: asyncpg.Pool, run_id: uuid.UUID, parser: StatementParser, exc: BaseException
) -> None:
    reason = str(exc) if isinstance(exc, StatementError) else describe_text(exc)
    if not isinstance(exc, StatementError | asyncio.CancelledError):
        log.warning("reconciliation run %s failed: %s", run_id, reason)
    try:
        await pool.execute(
            _FINISH, run_id, "failed", {"status": "failed", "error": reason[:500]},
            parser.errors, parser.total, parser.malformed, None, None,
        )  # fmt: skip
    except Exception:
        log.exception("could not mark reconciliation run %s failed", run_id)


async def _drop_temp(conn: asyncpg.Connection) -> None:
    try:
        await conn.execute("DROP TABLE IF EXISTS pg_temp.recon_statement")
    except Exception:  # a broken connection is discarded by the pool with its temp table
        log.debug("could not drop the statement temp table", exc_info=True)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


# -- reading a run's items (the ops API and its CSV export) ------------------------------

ITEM_COLUMNS = (
    "id", "category", "reference_number", "payment_id", "line_number", "statement_amount",
    "internal_amount", "difference", "statement_status", "internal_status", "details",
)  # fmt: skip
_ITEMS = f"""
SELECT {", ".join(ITEM_COLUMNS)} FROM payment_service.reconciliation_items
WHERE run_id = $1 AND ($2::text IS NULL OR category = $2) AND id > $3
ORDER BY id LIMIT $4
"""
_RUN = "SELECT * FROM payment_service.reconciliation_runs WHERE id = $1"


async def get_run(pool: asyncpg.Pool, run_id: uuid.UUID) -> asyncpg.Record | None:
    return await pool.fetchrow(_RUN, run_id)


async def run_items(
    pool: asyncpg.Pool, run_id: uuid.UUID, category: str | None, after: int, limit: int
) -> list[asyncpg.Record]:
    """A page of a run's items in id order, after the item id `after` (a cursor)."""
    return await pool.fetch(_ITEMS, run_id, category, after, limit)


# -- the list of runs, newest first (idx_recon_runs_started) -------------------------------

_RUNS = """
SELECT id, kind, source, actor, status, period_start, period_end, total_lines,
       malformed_lines, summary, started_at, completed_at
FROM payment_service.reconciliation_runs
WHERE $1::timestamptz IS NULL OR (started_at, id) < ($1, $2::uuid)
ORDER BY started_at DESC, id DESC LIMIT $3
"""


async def list_runs(
    pool: asyncpg.Pool, after: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[asyncpg.Record]:
    at, last = after if after is not None else (None, None)
    return await pool.fetch(_RUNS, at, last, limit)
