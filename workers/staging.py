"""Staging ingestion (seed 004's Staging Processor): the bulk path into `payments`.

An ETL fills `payment_service.payment_staging`; this worker drains it in batches of
STAGING_BATCH_SIZE rows. One batch is one transaction:

1. claim the oldest unprocessed rows, `ORDER BY id ... FOR UPDATE SKIP LOCKED`, so any
   number of workers in any number of processes share the backlog without overlap;
2. validate every row with the webhook's rules (`validate_staging_row`) and coalesce
   repeated references inside the batch (the first valid occurrence leads);
3. record the leaders with `gateway.store.record_batch` (references ON CONFLICT +
   payments + outbox + audit in one statement): `payment_references` decides, so a
   reference already taken by a webhook or an earlier batch is never recorded twice;
4. mark every claimed row in one `UPDATE ... FROM unnest(...)`;
5. write one `staging_process_log` row with the counts and timings.

If anything fails the transaction rolls back as a whole (nothing recorded, nothing
marked) and the batch is tried again, up to STAGING_MAX_RETRIES times with backoff;
after that a `failed` log row is written and the rows wait for the next interval. A
commit whose acknowledgement was lost is harmless: its rows are marked, so they are not
claimed again, and the reference table would refuse them anyway.

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
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from gateway import metrics
from gateway.config import Settings
from gateway.errors import ValidationError
from gateway.model import Payment
from gateway.notify import Wakeup
from gateway.store import BatchOutcome, Candidate, Existing, Loser, record_batch, record_losers
from gateway.validation import DateWindow, date_window, validate_staging_row
from workers.base import Worker

log = logging.getLogger(__name__)

RECORDED, DUPLICATE, CONFLICT, ERROR = "recorded", "duplicate", "conflict", "error"
ERROR_DETAILS_MAX = 100
# An exact count of a large backlog is a scan (~0.2 s per million rows): while batches come
# back full it is refreshed this often, and after every batch once the backlog is drained.
BACKLOG_REFRESH_SECONDS = 15.0

_CLAIM = """
SELECT id, reference_number, loan_account_number, cif, amount, payment_date,
       payment_channel, metadata
FROM payment_service.payment_staging
WHERE processed IS NOT TRUE
ORDER BY id
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

_MARK = """
UPDATE payment_service.payment_staging s
SET processed = TRUE, processed_at = (now() AT TIME ZONE 'UTC'),
    result = u.result, payment_id = u.payment_id, error = u.error
FROM unnest($1::bigint[], $2::text[], $3::uuid[], $4::text[]) AS u(id, result, payment_id, error)
WHERE s.id = u.id
"""

_LOG = """
INSERT INTO payment_service.staging_process_log
    (batch_start_id, batch_end_id, total_records, processed_records, duplicate_records,
     error_records, status, attempt, duration_ms, completed_at, error_details)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, clock_timestamp(), $10)
"""

_BACKLOG = "SELECT count(*) FROM payment_service.payment_staging WHERE processed IS NOT TRUE"


# -- the pure part: what each row of a batch becomes --------------------------------


@dataclass(slots=True)
class Fate:
    """The verdict on one staging row, as written back onto it."""

    result: str
    payment_id: object = None  # uuid.UUID or str
    field: str | None = None
    detail: str | None = None

    @property
    def error(self) -> str | None:
        return None if self.field is None else f"{self.field}: {self.detail}"


@dataclass(slots=True)
class Plan:
    """A claimed batch after validation and in-batch coalescing."""

    ids: list[int]
    refs: list[str]
    fates: list[Fate | None]  # None until decided; errors are decided at planning time
    payments: list[Payment | None]  # None for rows that failed validation
    leaders: list[Candidate] = field(default_factory=list)
    rows_of: dict[str, list[int]] = field(
        default_factory=dict
    )  # ref -> its valid rows, leader first


def plan_batch(rows: Sequence[Any], window: DateWindow) -> Plan:
    """Validate each row and pick one leader per reference (the first valid row)."""
    plan = Plan(ids=[], refs=[], fates=[], payments=[])
    for i, row in enumerate(rows):
        plan.ids.append(row["id"])
        plan.refs.append(row["reference_number"])
        try:
            payment = validate_staging_row(row, window=window)
        except ValidationError as exc:
            plan.fates.append(Fate(ERROR, None, exc.field, exc.detail))
            plan.payments.append(None)
            continue
        plan.fates.append(None)
        plan.payments.append(payment)
        ref = payment.reference_number
        same = plan.rows_of.get(ref)
        if same is None:
            plan.rows_of[ref] = [i]
            plan.leaders.append(Candidate(payment))
        else:
            same.append(i)
    return plan


def settle(plan: Plan, created: set[Any], existing: dict[str, Existing]) -> list[Loser]:
    """Decide every valid row from what `record_batch` reported for its leader.

    A reference's truth is what is stored: the leader if it was just created, the
    existing payment otherwise. Each row carrying that reference is a duplicate of it
    when its business hash matches and a conflict when it does not (hashes are only
    computed where there is something to compare: the common new row needs none).
    Returns the conflicts to audit.
    """
    conflicts: list[Loser] = []
    for cand in plan.leaders:
        ref = cand.payment.reference_number
        rows = plan.rows_of[ref]
        fresh = cand.payment_id in created
        if fresh:
            plan.fates[rows[0]] = Fate(RECORDED, cand.payment_id)
            if len(rows) == 1:
                continue
            truth_id: object = cand.payment_id
            truth_hash = cand.payment.payload_hash
            rows = rows[1:]
        else:
            known = existing[ref]
            truth_id, truth_hash = known.payment_id, known.payload_hash
        detail = (
            "differs from an earlier row of this batch"
            if fresh
            else "differs from the recorded payment"
        )
        for i in rows:
            payment = plan.payments[i]
            assert payment is not None
            if payment.payload_hash == truth_hash:
                plan.fates[i] = Fate(DUPLICATE, truth_id)
                continue
            plan.fates[i] = Fate(CONFLICT, truth_id, "reference_number", detail)
            conflicts.append(
                Loser(ref, str(truth_id), CONFLICT, None, None, None,
                      {"source": "staging", "staging_id": plan.ids[i], "detail": detail})
            )  # fmt: skip
    return conflicts


@dataclass(frozen=True, slots=True)
class Counts:
    recorded: int
    duplicate: int
    conflict: int
    error: int


def count(fates: Iterable[Fate | None]) -> Counts:
    tally = {RECORDED: 0, DUPLICATE: 0, CONFLICT: 0, ERROR: 0}
    for fate in fates:
        assert fate is not None
        tally[fate.result] += 1
    return Counts(tally[RECORDED], tally[DUPLICATE], tally[CONFLICT], tally[ERROR])


def error_details(plan: Plan, limit: int = ERROR_DETAILS_MAX) -> dict[str, Any] | None:
    """The log's view of what went wrong: bounded, so a bad file cannot bloat it."""
    items: list[dict[str, Any]] = []
    total = conflicts = 0
    for row_id, ref, fate in zip(plan.ids, plan.refs, plan.fates, strict=True):
        if fate is None or fate.field is None:
            continue
        total += 1
        conflicts += fate.result == CONFLICT
        if len(items) < limit:
            items.append(
                {"id": row_id, "reference_number": ref, "field": fate.field, "detail": fate.detail}
            )
    if not total:
        return None
    return {"total": total, "conflicts": conflicts, "truncated": total > limit, "items": items}


def retry_delay(attempt: int, base: float, cap: float = 5.0) -> float:
    """Full-jitter exponential backoff before retry number `attempt` (1-based)."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))


# -- the worker -----------------------------------------------------------------------


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


class StagingWorker(Worker):
    name = "staging"
    retry_base_delay = 0.2  # seconds; doubled per retry, jittered

    def __init__(self, pool: asyncpg.Pool, settings: Settings, wakeup: Wakeup | None = None):
        super().__init__(settings.staging_interval_seconds, wakeup)
        self.pool = pool
        self.settings = settings
        self.batch_size = settings.staging_batch_size
        self._backlog_at = 0.0
        self.last_report: BatchReport | None = None

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
                    attempt, attempts, _describe(exc.cause),
                )  # fmt: skip
                if attempt < attempts:
                    await asyncio.sleep(retry_delay(attempt, self.retry_base_delay))
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
                rows = await conn.fetch(_CLAIM, self.batch_size)
                if not rows:
                    return BatchReport(0, 0, 0, Counts(0, 0, 0, 0), attempt, 0.0)
                plan = plan_batch(rows, self._window())
                ids = plan.ids
                del rows
                outcome = await self._record(conn, plan)
                conflicts = settle(plan, outcome.created, outcome.existing)
                if conflicts:
                    await record_losers(conn, conflicts, actor="staging")
                counts = count(plan.fates)
                await conn.execute(
                    _MARK,
                    plan.ids,
                    [f.result for f in plan.fates if f is not None],
                    [f.payment_id for f in plan.fates if f is not None],
                    [f.error for f in plan.fates if f is not None],
                )
                seconds = time.perf_counter() - started
                await conn.execute(
                    _LOG,
                    min(plan.ids), max(plan.ids), len(plan.ids),
                    counts.recorded, counts.duplicate, counts.conflict + counts.error,
                    "completed", attempt, seconds * 1000, error_details(plan),
                )  # fmt: skip
                return BatchReport(
                    min(plan.ids), max(plan.ids), len(plan.ids), counts, attempt, seconds
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise BatchFailed(exc, ids) from exc

    async def _record(self, conn: asyncpg.Connection, plan: Plan) -> BatchOutcome:
        """Record the leaders; if the database refuses one of them, isolate it.

        Validation should catch everything Postgres would refuse, but one bad row must
        never sink a whole batch forever: on a data or constraint error the leaders are
        retried one by one, each in its own savepoint, and the refused ones become errors.
        """
        if not plan.leaders:
            return BatchOutcome(set(), {})
        try:
            async with conn.transaction():
                return await record_batch(conn, plan.leaders, **self._store_args())
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError):
            log.warning("staging batch refused by the database; isolating its rows")
        created: set[Any] = set()
        existing: dict[str, Existing] = {}
        kept: list[Candidate] = []
        for cand in plan.leaders:
            try:
                async with conn.transaction():
                    one = await record_batch(conn, [cand], **self._store_args())
            except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
                ref = cand.payment.reference_number
                detail = f"rejected by the database ({exc.sqlstate})"
                for i in plan.rows_of.pop(ref):
                    plan.fates[i] = Fate(ERROR, None, "row", detail)
                continue
            kept.append(cand)
            created |= one.created
            existing.update(one.existing)
        plan.leaders = kept
        return BatchOutcome(created, existing)

    def _store_args(self) -> dict[str, str]:
        return {"source": "staging", "topic": self.settings.kafka_topic, "actor": "staging"}

    def _window(self) -> DateWindow:
        return date_window(
            datetime.now(UTC),
            self.settings.partition_retention_months,
            self.settings.payment_date_max_future_days,
        )

    async def _after(self, report: BatchReport) -> None:
        if report.total:
            c = report.counts
            metrics.staging_rows.labels("processed").inc(c.recorded)
            metrics.staging_rows.labels("duplicate").inc(c.duplicate)
            metrics.staging_rows.labels("error").inc(c.conflict + c.error)
            metrics.staging_batch_duration.observe(report.seconds)
            if c.recorded:
                self.wakeup.ring()
        full = report.total >= self.batch_size
        now = time.monotonic()
        if not full or now - self._backlog_at >= BACKLOG_REFRESH_SECONDS:
            self._backlog_at = now
            try:
                metrics.staging_backlog.set(await self.pool.fetchval(_BACKLOG, timeout=5))
            except Exception as exc:  # a gauge must not fail a committed batch
                log.warning("staging backlog refresh failed: %s", _describe(exc))

    async def _log_failure(self, failure: BatchFailed, attempts: int, started: float) -> None:
        """Record the given-up batch in its own transaction; its rows stay unprocessed."""
        ids = failure.ids
        log.error(
            "staging batch failed after %d attempts (%s); its rows stay queued",
            attempts, _describe(failure.cause),
        )  # fmt: skip
        details = {"error": type(failure.cause).__name__, "sqlstate": _sqlstate(failure.cause)}
        try:
            await self.pool.execute(
                _LOG,
                min(ids, default=0), max(ids, default=0), len(ids), 0, 0, 0,
                "failed", attempts, (time.perf_counter() - started) * 1000, details,
            )  # fmt: skip
        except Exception as exc:
            log.warning("could not log the failed staging batch: %s", _describe(exc))


def _sqlstate(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None)


def _describe(exc: BaseException) -> str:
    """The error's class and SQLSTATE: never its message, which may quote row data."""
    state = _sqlstate(exc)
    return f"{type(exc).__name__}({state})" if state else type(exc).__name__
