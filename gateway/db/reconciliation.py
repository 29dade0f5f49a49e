"""Statement reconciliation: a bank or provider statement (CSV) against our payments.

Webhooks are best effort (seed 002); the statement is the other side's ledger, and
reconciling against it is the safety net. The work is set-based so a million-line
statement stays a matter of seconds and of flat memory:

1. the statement is on disk already (spooled by the upload: no connection is held while
   a client sends it), with its sha256; a statement whose identity (file, options,
   provider, named period) matches a running or completed run is that run, returned
   as it is, so a re-sent statement never doubles the work;
2. the file is parsed chunk by chunk (gateway.domain.statements) and its good lines are
   COPYed into a session TEMP table;
3. gateway.db.reconcile_match classifies them and links the differences to the open
   items of earlier runs.

One pool connection does all of it, acquired with a timeout (503 when the pool is
exhausted); a failure is recorded on that connection, or on a fresh one (again with a
timeout) when that one broke.

Operators act on the exceptions through the run's items (API, CSV export). Events are
deliberately coarse: one `reconciliation.completed` event per run with the
counts, plus an audit_log row for the first EXCEPTIONS_AUDITED new exceptions. One
event per mismatch would flood the topic when a statement is badly off (the usual case
for a wrong period or mapping), and the items table already is the work list.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from gateway.db import primary
from gateway.db.errors import describe_text
from gateway.db.event_log import append_event_sql
from gateway.db.reconcile_match import LONG, match, midnight
from gateway.domain.statements import (
    Record,
    StatementError,
    StatementFile,
    StatementOptions,
    StatementParser,
)
from gateway.errors import Conflict
from gateway.observability import metrics

log = logging.getLogger(__name__)

COPY_CHUNK = 50_000
EXCEPTIONS_AUDITED = 100
COMPLETED_EVENT = "reconciliation.completed"
ACQUIRE_TIMEOUT = 10.0  # seconds to wait for a pool connection before answering 503
STALE_RUNNING = 2 * LONG  # a run "running" this long was abandoned (its process died)

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

_CLAIM = """
INSERT INTO payment_service.reconciliation_runs
    (kind, source, actor, statement_digest, statement_identity, provider, statement_bytes)
VALUES ('statement', $1, $2, $3, $4, $5, $6)
ON CONFLICT (statement_identity)
    WHERE statement_identity IS NOT NULL AND status IN ('running', 'completed')
DO NOTHING
RETURNING id
"""
_SAME_STATEMENT = """
SELECT * FROM payment_service.reconciliation_runs
WHERE statement_identity = $1 AND status IN ('running', 'completed')
"""
_ABANDONED = """
UPDATE payment_service.reconciliation_runs
SET status = 'failed', completed_at = now(),
    summary = jsonb_build_object('status', 'failed',
                                 'error', 'abandoned: the import never finished')
WHERE id = $1 AND status = 'running' AND started_at < now() - make_interval(secs => $2)
"""

_AUDIT_EXCEPTIONS = """
INSERT INTO payment_service.audit_log (actor, action, reference_number, payment_id, details)
SELECT $2, 'reconciliation_exception', reference_number, payment_id,
       jsonb_build_object('run_id', run_id, 'category', category, 'difference', difference,
                          'line_number', line_number)
FROM payment_service.reconciliation_items
WHERE run_id = $1 AND category <> ALL($3::text[]) AND open_item_id IS NULL
ORDER BY id LIMIT $4
"""

_COMPLETED = append_event_sql(event_id="$1", event_type="$2", topic="$3", key="$4", payload="$5")

_FINISH = """
UPDATE payment_service.reconciliation_runs
SET status = $2, summary = $3, errors = $4, total_lines = $5, malformed_lines = $6,
    period_start = $7, period_end = $8, completed_at = now()
WHERE id = $1
"""


@dataclass(frozen=True)
class Imported:
    """A run's summary, and whether this import made it (False: the statement had been
    imported already, and this is that run)."""

    summary: dict[str, Any]
    created: bool


async def reconcile_statement(
    pool: asyncpg.Pool,
    statement: StatementFile,
    options: StatementOptions,
    *,
    topic: str,
    actor: str,
    acquire_timeout: float = ACQUIRE_TIMEOUT,
) -> Imported:
    """Import a statement and match it; returns the run summary (also stored on the run).

    A statement that cannot be read at all (no header, a required column missing)
    marks the run failed and raises StatementError; malformed lines never do.
    """
    started = time.perf_counter()
    identity = options.identity(statement.digest)
    parser = StatementParser(options)
    async with pool.acquire(timeout=acquire_timeout) as conn:
        run_id = await _claim(conn, statement, options, identity, actor)
        if not isinstance(run_id, uuid.UUID):
            return Imported(_existing(run_id), created=False)
        try:
            await conn.execute(_TEMP)
            await _load(conn, parser, statement.chunks())
            summary = await _match(conn, run_id, parser, options, statement, topic, actor)
        except BaseException as exc:
            await _fail(pool, conn, run_id, parser, exc, acquire_timeout)
            raise
        finally:
            await _drop_temp(conn)
        summary["duration_seconds"] = round(time.perf_counter() - started, 3)
        await conn.execute(
            "UPDATE payment_service.reconciliation_runs SET summary = $2 WHERE id = $1",
            run_id, summary,
        )  # fmt: skip
    return Imported(summary, created=True)


async def _claim(
    conn: asyncpg.Connection,
    statement: StatementFile,
    options: StatementOptions,
    identity: str,
    actor: str,
) -> uuid.UUID | asyncpg.Record:
    """A new run's id, or the run of the same statement (running or completed)."""
    args = (
        (options.source or statement.name or "upload")[:500], actor[:255], statement.digest,
        identity, (options.provider or None) and options.provider[:100], statement.size,
    )  # fmt: skip
    for _ in range(2):
        run_id = await conn.fetchval(_CLAIM, *args)
        if run_id is not None:
            return run_id
        same = await conn.fetchrow(_SAME_STATEMENT, identity)
        if same is None:
            continue  # it failed in between: claim again
        if (
            same["status"] == "running"
            and await conn.execute(_ABANDONED, same["id"], STALE_RUNNING) == "UPDATE 1"
        ):
            continue
        return same
    raise Conflict("this statement's import changed state twice; retry", code="import_busy")


def _existing(run: asyncpg.Record) -> dict[str, Any]:
    summary = dict(run["summary"] or {"run_id": str(run["id"]), "status": run["status"]})
    summary["already_imported"] = True
    summary["detail"] = (
        f"this statement was imported already (run {run['id']}, {run['status']}, "
        f"started {run['started_at'].isoformat()}); nothing was imported again"
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
        "recon_statement", records=records, schema_name="pg_temp", timeout=LONG,
        columns=["line_number", "reference_number", "amount", "payment_date", "status", "currency"],
    )  # fmt: skip


async def _match(
    conn: asyncpg.Connection,
    run_id: uuid.UUID,
    parser: StatementParser,
    options: StatementOptions,
    statement: StatementFile,
    topic: str,
    actor: str,
) -> dict[str, Any]:
    await conn.execute("ANALYZE recon_statement", timeout=LONG)
    async with conn.transaction():
        await conn.execute("SET LOCAL work_mem = '256MB'")
        found = await match(conn, run_id, options)
        await conn.execute(
            _AUDIT_EXCEPTIONS, run_id, actor, ["matched", "matched_with_fee"], EXCEPTIONS_AUDITED
        )
        summary: dict[str, Any] = {
            "run_id": str(run_id),
            "status": "completed",
            "source": options.source or statement.name,
            "provider": options.provider,
            "statement_sha256": statement.digest,
            "total_lines": parser.total,
            "malformed_lines": parser.malformed,
            **found.summary(),
            "tolerance": str(options.tolerance),
            "date_tolerance_days": options.date_tolerance_days,
            "fee_rule": {"percent": str(options.fee_percent), "fixed": str(options.fee_fixed)},
        }
        await _completed_event(conn, run_id, summary, topic)
        # The run itself is an ops action: who imported what, with its outcome.
        await conn.execute(
            "INSERT INTO payment_service.audit_log (actor, action, details)"
            " VALUES ($1, 'reconciliation_run', $2)",
            actor,
            {"run_id": str(run_id), "source": summary["source"], "counts": found.counts},
        )
        start, end = found.period or (None, None)
        await conn.execute(
            _FINISH, run_id, "completed", summary, parser.errors, parser.total, parser.malformed,
            midnight(start) if start else None, midnight(end) if end else None,
        )  # fmt: skip
    for category, n in found.counts.items():
        if n:
            metrics.reconciliation_items.labels(category).inc(n)
    log.info("reconciliation run %s: %s", run_id, found.counts)
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
        "new_exceptions": summary["new_exceptions"],
        "malformed_lines": summary["malformed_lines"],
        "period": summary["period"],
    }
    await conn.execute(
        _COMPLETED,
        event_id, COMPLETED_EVENT, topic, str(run_id), orjson.dumps(payload),
    )  # fmt: skip


async def _fail(
    pool: asyncpg.Pool,
    conn: asyncpg.Connection,
    run_id: uuid.UUID,
    parser: StatementParser,
    exc: BaseException,
    acquire_timeout: float,
) -> None:
    """Mark the run failed with its reason: on `conn` when it still works, else on a fresh
    connection, never waiting on the pool longer than `acquire_timeout`."""
    reason = str(exc) if isinstance(exc, StatementError) else describe_text(exc)
    if not isinstance(exc, StatementError | asyncio.CancelledError):
        log.warning("reconciliation run %s failed: %s", run_id, reason)
    args = (
        run_id, "failed", {"status": "failed", "error": reason[:500]}, parser.errors,
        parser.total, parser.malformed, None, None,
    )  # fmt: skip
    try:
        if primary.usable(conn) and not conn.is_in_transaction():
            await conn.execute(_FINISH, *args, timeout=30)
            return
        async with pool.acquire(timeout=acquire_timeout) as other:
            await other.execute(_FINISH, *args, timeout=30)
    except Exception:
        log.exception("could not mark reconciliation run %s failed", run_id)


async def _drop_temp(conn: asyncpg.Connection) -> None:
    if not primary.usable(conn):
        return  # a broken connection is discarded by the pool with its temp table
    try:
        await conn.execute("DROP TABLE IF EXISTS pg_temp.recon_statement")
    except Exception:
        log.debug("could not drop the statement temp table", exc_info=True)


# -- reading a run's items (the ops API and its CSV export) ------------------------------

ITEM_COLUMNS = (
    "id", "category", "reference_number", "payment_id", "line_number", "statement_amount",
    "internal_amount", "difference", "statement_status", "internal_status", "details",
    "open_item_id",
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
