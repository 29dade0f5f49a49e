"""Partition maintenance: monthly partitions that look after themselves.

One run, under a Postgres advisory lock so only one instance works at a time (the
others report "skipped"):

1. For `payments`, `webhook_events` and `audit_log`, create every missing monthly
   partition from the retention start to `PARTITION_PREMAKE_MONTHS` ahead (for the two
   tables stamped by the server's clock, from the install month when that is later;
   see partition_plan). After an outage every missing month is made, not just the next.
2. Rows that landed in a DEFAULT partition are moved into the partition created for
   their month, in the same transaction (see `_create_partition`).
3. Partitions whose upper bound is at or before the retention start are detached
   (`PARTITION_RETENTION_ACTION=detach`, the default) or dropped (`drop`). A detached
   partition is kept as a plain table renamed `<name>_detached`: its data stays for
   archiving (pg_dump it, then drop it), and the rename frees the monthly name so a
   later, longer retention can recreate an empty partition for that month. The
   DEFAULT partition is never detached or dropped. A month of `payments` that work
   still depends on (pending payments, parked status updates, unpublished events, open
   exceptions: workers/partition_dependents.py) is kept and reported as held while
   `PARTITION_RETENTION_WAIT` is on (the default); with it off, or `paygate partitions
   maintain --force`, it is retired anyway and what depended on it is reported. Either
   way, status updates still parked for the month's payments move to the operators'
   queue (payment_reviews, reason payment_retired) in the transaction that retires it.
4. `payment_references` rows older than `REFERENCE_CACHE_TTL_DAYS` are deleted in
   small batches, each its own short transaction (workers/reference_pruning.py).

What pruning references means: `payment_references` is the only authority on "have we
seen this reference". Once a reference's row is pruned, a delivery carrying that
reference is no longer recognised as a duplicate: it is recorded again as a new
payment. A provider replaying a delivery more than REFERENCE_CACHE_TTL_DAYS (default
90) days after it was first recorded therefore creates a second payment with a new
payment_id (and a second `payment.recorded` event); the same goes for any later
delivery with that reference, such as a late status change. Keep the TTL longer than
the longest replay window of every provider you accept webhooks from.

Locks: creating a partition holds, for one short transaction, EXCLUSIVE on the parent
(writes to the table wait; reads of its other partitions carry on) and ACCESS
EXCLUSIVE on its DEFAULT partition, while the range's rows move and the new table is
attached. Blocking writes at the parent rather than only at DEFAULT matters: an insert
that had already been routed to DEFAULT and waited there would fail with "new row ...
violates partition constraint" once the new partition is attached, whereas an insert
waiting on the parent re-reads the partition layout and lands in the new partition.
DEFAULT is small by design, so the pause is milliseconds. Every DDL transaction runs
with a `lock_timeout` (2 s); a timeout leaves that table for the next run instead of
queueing the hot path behind us. Retention (DETACH/DROP) needs ACCESS EXCLUSIVE on the
parent, bounded by the same timeout.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg

from gateway.config import Settings
from gateway.db import counts, retention
from gateway.db.partition_plan import (
    Existing,
    Partition,
    TablePlan,
    TableSpec,
    bound_literal,
    plan_table,
    table_specs,
)
from gateway.db.tables import SCHEMA, quote_ident
from gateway.observability import metrics
from workers import reference_pruning
from workers.base import Worker
from workers.partition_dependents import month_dependents, review_parked

log = logging.getLogger(__name__)

DEFAULT_SCHEMA = SCHEMA
PRUNE_BATCH_SIZE = 5000
LOCK_TIMEOUT = "2s"


def advisory_key(schema: str) -> int:
    """A stable signed 64-bit lock key per schema, so scratch schemas never contend
    with the real one."""
    digest = hashlib.sha256(f"paygate-partitions:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass
class MaintenanceReport:
    """What one run did; `result` is ok, partial (a lock timed out), held (a payments
    month past retention kept for what depends on it), skipped or error."""

    result: str = "ok"
    created: list[str] = field(default_factory=list)
    moved_rows: dict[str, int] = field(default_factory=dict)
    detached: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    # Payments months past retention kept (held) or retired anyway (forced), with what
    # still depended on them (workers.partition_dependents.Dependents.as_dict()).
    held: dict[str, dict[str, int]] = field(default_factory=dict)
    retired_with_dependents: dict[str, dict[str, int]] = field(default_factory=dict)
    references_pruned: int = 0
    prune_batches: int = 0
    default_rows: dict[str, int] = field(default_factory=dict)

    @property
    def skipped(self) -> bool:
        return self.result == "skipped"


@dataclass(frozen=True)
class PartitionInfo:
    """One line of `paygate partitions status`. `action` is what maintenance would do:
    keep, create (not there yet), detach, drop, held (past retention, kept for what
    depends on it), conflict, or default."""

    table: str
    name: str
    lower: datetime | None
    upper: datetime | None
    rows: int | None
    exact: bool
    action: str


class PartitionMaintainer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        *,
        schema: str = DEFAULT_SCHEMA,
        prune_batch_size: int = PRUNE_BATCH_SIZE,
        lock_timeout: str = LOCK_TIMEOUT,
        force: bool = False,
    ) -> None:
        """`force`: retire payments months past retention even if work depends on them
        (as PARTITION_RETENTION_WAIT=false does)."""
        self.pool = pool
        self.settings = settings
        self.wait_for_dependents = settings.partition_retention_wait and not force
        self.schema = schema
        self.prune_batch_size = prune_batch_size
        self.lock_timeout = lock_timeout
        self.specs = table_specs(settings)

    def _q(self, name: str) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(name)}"

    async def maintain(self, now: datetime | None = None) -> MaintenanceReport:
        """One full run: create, move, retire, prune, measure. Never raises for a held
        lock; other failures are counted, logged and re-raised."""
        return await self._run(now, full=True)

    async def ensure(
        self, now: datetime | None = None, wait_seconds: float = 30.0
    ) -> MaintenanceReport:
        """Only create the partitions that are missing (and move DEFAULT rows into them).
        Waits up to `wait_seconds` for a run in progress elsewhere, then runs itself, so
        the partitions exist when it returns (unless it reports skipped)."""
        return await self._run(now, full=False, wait_seconds=wait_seconds)

    async def _run(
        self, now: datetime | None, *, full: bool, wait_seconds: float = 0.0
    ) -> MaintenanceReport:
        now = now or datetime.now(UTC)
        report = MaintenanceReport()
        try:
            async with self.pool.acquire() as conn:
                # Advisory locks belong to the session: this connection holds it for the
                # whole run and gives it back before returning to the pool.
                key = advisory_key(self.schema)
                if not await _try_lock(conn, key, wait_seconds):
                    report.result = "skipped"
                    metrics.partition_maintenance_runs.labels(result="skipped").inc()
                    log.info("partition maintenance skipped: another instance holds the lock")
                    return report
                try:
                    await self._work(conn, now, report, full=full)
                finally:
                    await conn.execute("SELECT pg_advisory_unlock($1)", key)
        except Exception:
            metrics.partition_maintenance_runs.labels(result="error").inc()
            raise
        if report.deferred:
            report.result = "partial"
        elif report.held:
            report.result = "held"
        if full:
            _publish_held(report)
        metrics.partition_maintenance_runs.labels(result=report.result).inc()
        log.info(
            "partition maintenance %s: created=%d detached=%d dropped=%d deferred=%d held=%d "
            "moved=%d references_pruned=%d",
            report.result,
            len(report.created),
            len(report.detached),
            len(report.dropped),
            len(report.deferred),
            len(report.held),
            sum(report.moved_rows.values()),
            report.references_pruned,
        )
        return report

    async def _work(
        self, conn: asyncpg.Connection, now: datetime, report: MaintenanceReport, *, full: bool
    ) -> None:
        installed = await self._installed(conn)
        for spec in self.specs:
            plan = plan_table(
                spec,
                now,
                self.settings.partition_premake_months,
                await self._existing(conn, spec.name),
                installed,
            )
            report.conflicts.extend(p.name for p in plan.conflicts)
            for n, wanted in enumerate(plan.create):
                try:
                    moved = await self._create_partition(conn, spec, wanted)
                except asyncpg.LockNotAvailableError:
                    # The hot path holds the table: try again next run, skip the rest of it.
                    report.deferred.extend(p.name for p in plan.create[n:])
                    log.warning("lock timeout creating %s; deferred to next run", wanted.name)
                    break
                if moved is None:
                    continue
                report.created.append(wanted.name)
                if moved:
                    report.moved_rows[wanted.name] = moved
            if full:
                await self._retire(conn, spec, plan, report)
        if full:
            await self._prune_references(conn, now, report)
        report.default_rows = await counts.default_partition_rows(conn, self.schema)

    async def _installed(self, conn: asyncpg.Connection) -> datetime | None:
        """When this schema was first migrated: its first `schema_migrations` row. None for
        a schema without one (the tests' scratch copies): every month is then wanted."""
        return await retention.installed_at(conn, self.schema)

    async def _existing(self, conn: asyncpg.Connection, table: str) -> list[Existing]:
        return await retention.attached_partitions(conn, self._q(table))

    async def _create_partition(
        self, conn: asyncpg.Connection, spec: TableSpec, p: Partition
    ) -> int | None:
        """Create `p` and move its rows out of DEFAULT; return rows moved, or None when
        the partition already exists.

        Postgres refuses to attach a range that rows in DEFAULT belong to. So, in one
        transaction: lock the parent against writes and DEFAULT entirely, build a
        standalone table shaped like the parent, move the range's rows into it, and
        ATTACH it (which also builds the parent's indexes on it). ATTACH validates
        DEFAULT, which no longer holds any of those rows. The same path serves an empty
        DEFAULT: the move is then a no-op on a small table.
        """
        parent, default, new = self._q(spec.name), self._q(spec.name + "_default"), self._q(p.name)
        lo = bound_literal(p.lower, spec.with_time_zone)
        hi = bound_literal(p.upper, spec.with_time_zone)
        key = quote_ident(spec.column)
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{self.lock_timeout}'")
            if await conn.fetchval("SELECT to_regclass($1)", new):
                return None
            await conn.execute(f"LOCK TABLE ONLY {parent} IN EXCLUSIVE MODE")
            await conn.execute(f"LOCK TABLE {default} IN ACCESS EXCLUSIVE MODE")
            await conn.execute(
                f"CREATE TABLE {new} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
            )
            status = await conn.execute(
                f"""
                WITH moved AS (
                    DELETE FROM {default} WHERE {key} >= {lo} AND {key} < {hi} RETURNING *
                )
                INSERT INTO {new} SELECT * FROM moved
                """
            )
            await conn.execute(
                f"ALTER TABLE {parent} ATTACH PARTITION {new} FOR VALUES FROM ({lo}) TO ({hi})"
            )
        moved = int(status.split()[-1])
        if moved:
            log.info("moved %d rows from %s_default into %s", moved, spec.name, p.name)
        return moved

    async def _retire(
        self, conn: asyncpg.Connection, spec: TableSpec, plan: TablePlan, report: MaintenanceReport
    ) -> None:
        drop = self.settings.partition_retention_action == "drop"
        parent = self._q(spec.name)
        for old in plan.retire:
            if old.is_default or old.name == spec.name + "_default":
                continue
            payments = spec.name == "payments"
            if payments and not await self._may_retire(conn, old, report):
                continue
            try:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL lock_timeout = '{self.lock_timeout}'")
                    await conn.execute(f"ALTER TABLE {parent} DETACH PARTITION {self._q(old.name)}")
                    if payments:  # detached, still readable here: what was parked for it
                        await review_parked(conn, self.schema, old.name)
                    if drop:
                        await conn.execute(f"DROP TABLE {self._q(old.name)}")
                    else:
                        renamed = quote_ident(old.name + "_detached")
                        await conn.execute(f"ALTER TABLE {self._q(old.name)} RENAME TO {renamed}")
            except asyncpg.LockNotAvailableError:
                report.deferred.append(old.name)
                log.warning("lock timeout retiring %s; deferred to next run", old.name)
                continue
            except asyncpg.DuplicateTableError:
                report.conflicts.append(old.name)
                log.error("cannot detach %s: %s_detached already exists", old.name, old.name)
                continue
            (report.dropped if drop else report.detached).append(old.name)

    async def _may_retire(
        self, conn: asyncpg.Connection, old: Existing, report: MaintenanceReport
    ) -> bool:
        """Count what depends on a payments month; keep it (held) while anything does,
        unless told not to wait."""
        deps = await month_dependents(
            conn, self.schema, old.name, old.lower or datetime.min, old.upper or datetime.max
        )
        if not deps.total:
            return True
        if self.wait_for_dependents:
            report.held[old.name] = deps.as_dict()
            log.warning(
                "partition %s is past retention but kept: %s still depend on it",
                old.name, deps.describe(),
            )  # fmt: skip
            return False
        report.retired_with_dependents[old.name] = deps.as_dict()
        log.warning(
            "partition %s retired although %s depended on it (PARTITION_RETENTION_WAIT off "
            "or --force)", old.name, deps.describe(),
        )  # fmt: skip
        return True

    async def _prune_references(
        self, conn: asyncpg.Connection, now: datetime, report: MaintenanceReport
    ) -> None:
        """Delete expired references a batch at a time (workers/reference_pruning.py)."""
        cutoff = now - timedelta(days=self.settings.reference_cache_ttl_days)
        deleted, batches = await reference_pruning.prune_expired(
            conn, self._q("payment_references"), cutoff, self.prune_batch_size
        )
        report.references_pruned += deleted
        report.prune_batches += batches

    async def status(self, now: datetime | None = None) -> list[PartitionInfo]:
        """Every partition of the maintained tables, its rows and what a run would do."""
        now = now or datetime.now(UTC)
        infos: list[PartitionInfo] = []
        drop = self.settings.partition_retention_action == "drop"
        async with self.pool.acquire() as conn:
            installed = await self._installed(conn)
            for spec in self.specs:
                existing = await self._existing(conn, spec.name)
                plan = plan_table(
                    spec, now, self.settings.partition_premake_months, existing, installed
                )
                retire = {e.name for e in plan.retire}
                for e in existing:
                    rows, exact = await self._row_count(conn, e.name)
                    if e.is_default:
                        action = "default"
                    elif e.name in retire:
                        action = "drop" if drop else "detach"
                        if spec.name == "payments" and self.wait_for_dependents:
                            deps = await month_dependents(
                                conn, self.schema, e.name, e.lower or datetime.min,
                                e.upper or datetime.max,
                            )  # fmt: skip
                            if deps.total:
                                action = f"held: {deps.describe()}"
                    else:
                        action = "keep"
                    infos.append(
                        PartitionInfo(spec.name, e.name, e.lower, e.upper, rows, exact, action)
                    )
                for p, action in [(p, "create") for p in plan.create] + [
                    (p, "conflict") for p in plan.conflicts
                ]:
                    infos.append(
                        PartitionInfo(spec.name, p.name, p.lower, p.upper, None, True, action)
                    )
        order = {spec.name: n for n, spec in enumerate(self.specs)}
        infos.sort(key=lambda i: (order[i.table], i.lower is None, i.lower or now, i.name))
        return infos

    async def _row_count(self, conn: asyncpg.Connection, name: str) -> tuple[int | None, bool]:
        rows, _, exact = await retention.row_count(conn, self._q(name))
        return rows, exact


class PartitionWorker(Worker):
    """Runs maintenance every PARTITION_MAINTENANCE_INTERVAL_SECONDS."""

    name = "partitions"

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        super().__init__(settings.partition_maintenance_interval_seconds)
        self.maintainer = PartitionMaintainer(pool, settings)
        self.last_report: MaintenanceReport | None = None

    async def run_once(self) -> bool:
        self.last_report = await self.maintainer.maintain()
        return False


async def ensure_partitions(
    pool: asyncpg.Pool,
    settings: Settings,
    now: datetime | None = None,
    *,
    schema: str = DEFAULT_SCHEMA,
) -> MaintenanceReport:
    """Create the missing monthly partitions (right after migrating, before traffic).
    Nothing is detached, dropped or pruned here; the worker does that."""
    return await PartitionMaintainer(pool, settings, schema=schema).ensure(now)


def _publish_held(report: MaintenanceReport) -> None:
    """The held months' dependents, summed by kind, as the retention gauge."""
    totals = dict.fromkeys(
        ("pending_payments", "parked_updates", "unpublished_events", "open_exceptions"), 0
    )
    for deps in report.held.values():
        for kind, n in deps.items():
            totals[kind] += n
    metrics.partition_retention_held.labels("months").set(len(report.held))
    for kind, n in totals.items():
        metrics.partition_retention_held.labels(kind).set(n)


def format_status(infos: list[PartitionInfo]) -> str:
    """A plain table for `paygate partitions status`."""
    header = ("TABLE", "PARTITION", "FROM", "TO", "ROWS", "ACTION")
    lines = [header]
    for i in infos:
        if i.rows is None:
            rows = "-" if i.action in ("create", "conflict") else "?"
        else:
            rows = str(i.rows) if i.exact else f"~{i.rows}"
        lines.append((i.table, i.name, _fmt_time(i.lower), _fmt_time(i.upper), rows, i.action))
    widths = [max(len(line[c]) for line in lines) for c in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def format_report(report: MaintenanceReport) -> str:
    """What `paygate partitions maintain` did, for a person: one line per kind of change,
    and only the kinds that happened."""
    lines = [f"partition maintenance: {report.result}"]
    if report.skipped:
        lines.append("  another instance holds the maintenance lock; nothing done")
        return "\n".join(lines)
    for label, names in (
        ("created", report.created),
        ("detached", report.detached),
        ("dropped", report.dropped),
        ("deferred", report.deferred),
        ("conflicts", report.conflicts),
    ):
        if names:
            lines.append(f"  {label:<10} {len(names):>4}  {', '.join(names)}")
    for name, n in report.moved_rows.items():
        lines.append(f"  moved      {n:>4}  rows from DEFAULT into {name}")
    if report.references_pruned:
        lines.append(f"  pruned     {report.references_pruned:>4}  payment references")
    if len(lines) == 1:
        lines.append("  nothing to do: every partition is in place")
    waiting = {t: n for t, n in report.default_rows.items() if n}
    if waiting:
        rows = ", ".join(f"{t} {n}" for t, n in waiting.items())
        lines.append(f"  rows in DEFAULT partitions: {rows}")
    if report.deferred:
        lines.append("  deferred: a lock timed out; the next run makes them")
    return "\n".join(lines)


async def _try_lock(conn: asyncpg.Connection, key: int, wait_seconds: float) -> bool:
    deadline = time.monotonic() + wait_seconds
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.2)
    return True


def _fmt_time(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d")
