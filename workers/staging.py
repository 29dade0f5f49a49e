"""Staging ingestion (seed 004's Staging Processor): the bulk path into `payments`.

An ETL fills `payment_service.payment_staging`; this worker drains it in batches of
STAGING_BATCH_SIZE rows. One batch is one transaction of three statements, and the
rows never travel through Python (only their ids do): per-row Python work was most of
the cost, so validation, hashing, dedup and event payloads run in Postgres
(`workers.staging_sql`, generated from the Python rules it mirrors):

1. claim the oldest unprocessed rows, `ORDER BY id ... FOR UPDATE SKIP LOCKED`, so any
   number of workers in any number of processes share the backlog without overlap;
2. classify every row with the webhook's rules, lead each reference with its first
   valid row, claim the leaders' references ON CONFLICT in reference order (the same
   write as `gateway.db.payments.record_batch`: references + payments + outbox + audit),
   and mark the winners and the invalid rows;
3. in a fresh snapshot, decide the remaining valid rows against `payment_references`
   (duplicate or conflict), audit the conflicts, mark them and write one
   `staging_process_log` row with the counts and timings.

If anything fails the transaction rolls back as a whole (nothing recorded, nothing
marked) and the batch is tried again, up to STAGING_MAX_RETRIES times with backoff;
after that a `failed` log row is written and the rows wait for the next interval. A
commit whose acknowledgement was lost is harmless: its rows are marked, so they are not
claimed again, and the reference table would refuse them anyway. If the database
refuses the batch's data (a row the rules let through), the batch is recorded one
reference at a time and the refused references become errors.

What happens to each row is written on it (`result`, `payment_id`, `error`); every
claimed row gets `processed = TRUE` and `processed_at`, so it leaves the partial index
and is never claimed again, but only `recorded` rows created a payment:

- `recorded`: a new payment (`source = 'staging'`), `payment_id` is its id;
- `duplicate`: the reference already exists with the same business fields (amount,
  account, cif, date), `payment_id` is the existing payment;
- `conflict`: the reference exists with different business fields: nothing is applied,
  `payment_id` is the existing payment, `error` says so, and audit_log gets a
  `conflict` row, as on the webhook path (which answers 409);
- `error`: the row failed validation (or the database refused it): `error` is
  `<field>: <detail>`, `payment_id` is NULL.

Conflicts and errors count as `error_records` in the log; `error_details` holds
`{"total", "conflicts", "truncated", "items": [{id, reference_number, field, detail}]}`
with at most ERROR_DETAILS_MAX items. To find and re-queue them after fixing the data:

    SELECT id, reference_number, result, error FROM payment_service.payment_staging
     WHERE result IN ('error', 'conflict');
    UPDATE payment_service.payment_staging
       SET processed = FALSE, processed_at = NULL, result = NULL, error = NULL,
           payment_id = NULL
     WHERE result = 'error' AND id = ANY(...);

Payment ids are UUID v7 from Postgres 18's `uuidv7()`; on an older server they fall
back to `gen_random_uuid()` (v4: correct, only less index-friendly). That and the JSON
check are the version-dependent parts, chosen once from the server (gateway.db.server).
A batch that fails is logged with its SQLSTATE, the server's message and hint
(gateway.db.errors), never row values.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from gateway.config import Settings
from gateway.db.errors import describe, describe_text
from gateway.db.server import ServerFunctions, server_version
from gateway.domain.validation import date_window
from gateway.notify import Wakeup
from gateway.observability import metrics, tracing
from workers import staging_sql
from workers.backoff import backoff_delay
from workers.base import Worker
from workers.staging_sql import ERROR_DETAILS_MAX, Rule

log = logging.getLogger(__name__)

RECORDED, DUPLICATE, CONFLICT, ERROR = "recorded", "duplicate", "conflict", "error"
__all__ = [
    "CONFLICT",
    "DUPLICATE",
    "ERROR",
    "ERROR_DETAILS_MAX",
    "RECORDED",
    "BatchFailed",
    "BatchReport",
    "Counts",
    "Recorded",
    "StagingWorker",
]
_LOG_FAILED = """
INSERT INTO payment_service.staging_process_log
    (batch_start_id, batch_end_id, total_records, processed_records, duplicate_records,
     error_records, status, attempt, duration_ms, completed_at, error_details)
VALUES ($1, $2, $3, 0, 0, 0, 'failed', $4, $5, clock_timestamp(), $6)
"""


@dataclass(frozen=True, slots=True)
class Counts:
    recorded: int
    duplicate: int
    conflict: int
    error: int


@dataclass(slots=True)
class Recorded:
    """What the record statement reported for (part of) a batch."""

    recorded: int = 0
    errors: int = 0
    error_items: str | None = None  # JSON text, at most ERROR_DETAILS_MAX items by id
    rest_ids: list[int] | None = None  # valid rows that did not create a payment
    rest_fresh: list[bool] | None = None  # ...whose reference this batch just created

    def merge(self, other: Recorded) -> None:
        """Fold in another part (used only when a batch is recorded reference by reference)."""
        self.recorded += other.recorded
        self.errors += other.errors
        items = orjson.loads(self.error_items or "[]") + orjson.loads(other.error_items or "[]")
        items.sort(key=lambda x: x["id"])
        self.error_items = orjson.dumps(items[:ERROR_DETAILS_MAX]).decode() if items else None
        self.rest_ids = (self.rest_ids or []) + (other.rest_ids or [])
        self.rest_fresh = (self.rest_fresh or []) + (other.rest_fresh or [])


@dataclass(frozen=True, slots=True)
class BatchReport:
    start_id: int
    end_id: int
    total: int
    counts: Counts
    attempt: int
    seconds: float


class BatchFailed(Exception):
    """A batch attempt failed; carries the ids it had claimed, for the failure log."""

    def __init__(self, cause: BaseException, ids: Sequence[int]) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause
        self.ids = ids


_REFUSED = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)


RETRY_CAP_SECONDS = 5.0


class StagingWorker(Worker):
    name = "staging"
    retry_base_delay = 0.2  # seconds; doubled per retry, jittered
    # Batches in flight at once, each on its own connection (SKIP LOCKED shares the
    # backlog): while one batch waits for its commit's WAL flush, the other computes, and
    # a second core is used. With no backlog the second finds nothing to claim.
    concurrency = 2

    def __init__(self, pool: asyncpg.Pool, settings: Settings, wakeup: Wakeup | None = None):
        # Its own signal to sleep on; `wakeup` is the outbox relay's, rung after a commit
        # (sleeping on the relay's signal would wake on every webhook and steal its rings).
        super().__init__(settings.staging_interval_seconds)
        self.outbox_wake = wakeup or Wakeup()
        self.pool = pool
        self.settings = settings
        self.batch_size = settings.staging_batch_size
        self._record_sql: str | None = None
        self.last_report: BatchReport | None = None

    async def _loop(self) -> None:
        await asyncio.gather(*(Worker._loop(self) for _ in range(self.concurrency)))

    async def run_once(self) -> bool:
        """Process one batch; True while batches come back full (more is waiting)."""
        started = time.perf_counter()
        attempts = self.settings.staging_max_retries + 1
        failure: BatchFailed | None = None
        for attempt in range(1, attempts + 1):
            try:
                report = await self._attempt(attempt, started)
            except BatchFailed as exc:
                failure = exc
                log.warning(
                    "staging batch attempt %d/%d failed: %s",
                    attempt, attempts, describe_text(exc.cause),
                )  # fmt: skip
                if attempt < attempts:
                    await asyncio.sleep(
                        backoff_delay(attempt, self.retry_base_delay, RETRY_CAP_SECONDS)
                    )
                continue
            self.last_report = report
            await self._after(report)
            return report.total >= self.batch_size
        assert failure is not None
        await self._log_failure(failure, attempts, started)
        return False

    async def _attempt(self, attempt: int, started: float) -> BatchReport:
        ids: list[int] = []
        try:
            async with self.pool.acquire(timeout=10) as conn, conn.transaction():
                ids = await conn.fetchval(staging_sql.CLAIM, self.batch_size)
                if not ids:
                    return BatchReport(0, 0, 0, Counts(0, 0, 0, 0), attempt, 0.0)
                with tracing.span("paygate.staging.batch", **{"paygate.batch.rows": len(ids)}):
                    done = await self._record(conn, ids)
                first, last, total = ids[0], ids[-1], len(ids)
                seconds = time.perf_counter() - started
                tally = await conn.fetchrow(
                    staging_sql.SETTLE,
                    done.rest_ids or [], done.rest_fresh or [],
                    first, last, total, done.recorded, done.errors, done.error_items,
                    attempt, seconds * 1000,
                )  # fmt: skip
                assert tally is not None
                counts = Counts(
                    done.recorded,
                    tally["duplicate"],
                    tally["conflict"],
                    done.errors + tally["error"],
                )
                return BatchReport(first, last, total, counts, attempt, seconds)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise BatchFailed(exc, ids) from exc

    async def _record(self, conn: asyncpg.Connection, ids: list[int]) -> Recorded:
        """Record the claimed rows; if the database refuses the batch, isolate the culprit.

        The rules should catch everything Postgres would refuse, but one bad row must
        never sink a whole batch forever: on a data or constraint error the batch is
        recorded one reference at a time (in reference order, so concurrent workers
        cannot deadlock), each in its own savepoint, and refused references become errors.
        """
        sql = await self._sql(conn)
        try:
            async with conn.transaction():
                return await self._record_rows(conn, sql, ids)
        except _REFUSED:
            log.warning("staging batch refused by the database; isolating its rows")
        done = Recorded()
        rows = await conn.fetch(staging_sql.GROUPS, ids)
        for ref, group in itertools.groupby(rows, key=lambda r: r["reference_number"]):
            group_ids = [r["id"] for r in group]
            try:
                async with conn.transaction():
                    done.merge(await self._record_rows(conn, sql, group_ids))
            except _REFUSED as exc:
                log.warning("staging rows refused by the database: %s", describe_text(exc))
                problem = f"rejected by the database ({exc.sqlstate})"
                await conn.execute(staging_sql.REFUSE, group_ids, f"row: {problem}")
                items = [
                    {"id": i, "reference_number": ref, "field": "row", "detail": problem}
                    for i in group_ids
                ]
                done.merge(Recorded(0, len(group_ids), orjson.dumps(items).decode()))
        return done

    async def _record_rows(self, conn: asyncpg.Connection, sql: str, ids: list[int]) -> Recorded:
        window = date_window(
            datetime.now(UTC),
            self.settings.partition_retention_months,
            self.settings.payment_date_max_future_days,
        )
        trace = tracing.traceparent(tracing.current())
        row = await conn.fetchrow(
            sql, ids, window.earliest, window.latest, window.too_old_detail(),
            window.too_late_detail(), self.settings.kafka_topic, trace,
        )  # fmt: skip
        assert row is not None
        return Recorded(
            row["recorded"], row["errors"], row["error_items"], row["rest_ids"], row["rest_fresh"]
        )

    def rules(self, server: ServerFunctions) -> tuple[Rule, ...]:
        """The validation rules the batch statement applies (tests narrow them)."""
        return staging_sql.default_rules(server)

    async def _sql(self, conn: asyncpg.Connection) -> str:
        """The batch statement for this server, built once (gateway.db.server)."""
        if self._record_sql is None:
            server = ServerFunctions(await server_version(conn))
            self._record_sql = staging_sql.record_sql(self.rules(server), server=server)
        return self._record_sql

    async def _after(self, report: BatchReport) -> None:
        if report.total:
            c = report.counts
            metrics.staging_rows.labels("processed").inc(c.recorded)
            metrics.staging_rows.labels("duplicate").inc(c.duplicate)
            metrics.staging_rows.labels("error").inc(c.conflict + c.error)
            metrics.staging_batch_duration.observe(report.seconds)
            if c.recorded:
                self.outbox_wake.ring()

    async def _log_failure(self, failure: BatchFailed, attempts: int, started: float) -> None:
        """Record the given-up batch in its own transaction; its rows stay unprocessed."""
        ids = failure.ids
        log.error(
            "staging batch failed after %d attempts (%s); its rows stay queued",
            attempts, describe_text(failure.cause),
        )  # fmt: skip
        details: dict[str, Any] = describe(failure.cause)
        try:
            await self.pool.execute(
                _LOG_FAILED,
                min(ids, default=0), max(ids, default=0), len(ids),
                attempts, (time.perf_counter() - started) * 1000, details,
            )  # fmt: skip
        except Exception as exc:
            log.warning("could not log the failed staging batch: %s", describe_text(exc))
