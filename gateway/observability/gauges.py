"""What Prometheus and the operator on call see: `/metrics`, the stats endpoint, and the
gauges only a database query can answer, refreshed in the background.

Counters and histograms move on the request path where their events happen; gauges that
describe the database (outbox, dead letters, staging backlog, DEFAULT partitions) are
refreshed every few seconds by a background task, so a scrape never waits on a query;
of the server processes one host starts, only the first runs those queries.

With several server processes on one port, prometheus-client's multiprocess mode is on
(PROMETHEUS_MULTIPROC_DIR): each scrape merges every process's files, so any process
answers for all of them. prometheus-client picks its mode when it is first imported,
which is why this module imports it (and `gateway.observability.metrics`) only inside functions:
`prepare_multiprocess_dir` must run before that first import.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as dtime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
from aiohttp import web

from gateway import appkeys
from gateway.errors import ServiceUnavailable
from gateway.http.context import add_get, json_response

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("paygate.observability")

REFRESH_SECONDS = 5.0  # gauge refresh period; tests shorten it
STATS_CACHE_SECONDS = 5.0  # the stats endpoint recomputes at most this often
QUERY_TIMEOUT = 2.0
DEFAULT_PARTITION_TABLES = ("payments", "webhook_events", "audit_log")
_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
# Duplicates recognised before the database never write webhook_events.
_DATABASE_LAYER = "database"


def prepare_multiprocess_dir(path: str | os.PathLike[str]) -> Path:
    """Empty (or create) the multiprocess metrics directory and point prometheus-client at it.

    Call once per host start-up, in the parent, before anything imports prometheus_client:
    files left by an earlier run would otherwise be merged into this run's counters.
    """
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prepare_multiprocess_dir must run before prometheus_client is imported")
    directory = Path(path)
    if directory.exists():
        for entry in directory.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory


def _multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def metrics_registry() -> CollectorRegistry:
    """The registry a scrape reads: every process's files in multiprocess mode (a fresh
    registry each time, as prometheus-client requires), else this process's default one."""
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from gateway.observability import metrics

    metrics.flush_pending()  # this process's webhook-path counts, held since the last second
    if _multiprocess_dir() is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


def render_metrics(accept: str) -> tuple[bytes, str]:
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(accept)
    return encoder(metrics_registry()), content_type


async def metrics_handler(request: web.Request) -> web.Response:
    body, content_type = render_metrics(request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type})


# ---------------------------------------------------------------- in-process counters


def counter_totals(registry: CollectorRegistry) -> dict[str, float]:
    """The few in-process figures the stats endpoint needs, read from collected samples
    (so multiprocess mode sums every process on this host)."""
    wanted = {
        "paygate_dedup_hits_total",
        "paygate_webhook_request_duration_seconds_sum",
        "paygate_webhook_request_duration_seconds_count",
    }
    out = {"local_duplicates": 0.0, "duration_sum": 0.0, "duration_count": 0.0}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name not in wanted:
                continue
            if sample.name == "paygate_dedup_hits_total":
                if sample.labels.get("layer") != _DATABASE_LAYER:
                    out["local_duplicates"] += sample.value
            elif sample.name.endswith("_sum"):
                out["duration_sum"] += sample.value
            else:
                out["duration_count"] += sample.value
    return out


@dataclass
class DailyBaseline:
    """Turns process-lifetime counters into "since midnight UTC": at the first look on a
    new day the current values become the baseline. The refresher looks every few seconds,
    so a day loses at most one refresh period of counts."""

    day: date = field(default_factory=lambda: datetime.now(UTC).date())
    baseline: dict[str, float] = field(default_factory=dict)

    def today(self, current: Mapping[str, float], now: datetime | None = None) -> dict[str, float]:
        day = (now or datetime.now(UTC)).date()
        if day != self.day:
            self.day = day
            self.baseline = dict(current)
        return {k: max(0.0, v - self.baseline.get(k, 0.0)) for k, v in current.items()}


def midnight_utc(now: datetime | None = None) -> datetime:
    return datetime.combine((now or datetime.now(UTC)).date(), dtime.min, tzinfo=UTC)


# ---------------------------------------------------------------- stats endpoint

_STATS_SQL = """
SELECT
    (SELECT coalesce(sum(processed_records), 0) FROM payment_service.staging_process_log
      WHERE started_at >= $1) AS processed_today,
    (SELECT avg(duration_ms) FROM payment_service.staging_process_log
      WHERE started_at >= $1 AND completed_at IS NOT NULL) AS average_batch_ms,
    (SELECT count(*) FROM payment_service.payment_staging
      WHERE processed IS NOT TRUE) AS pending_count
"""

_WEBHOOKS_TODAY_SQL = """
SELECT outcome, count(*) AS n FROM payment_service.webhook_events
WHERE received_at >= $1 GROUP BY outcome
"""


def webhook_stats(
    outcomes: Mapping[str, int], local: Mapping[str, float]
) -> dict[str, float | int]:
    """Seed 004's `webhooks` block from today's webhook_events rows (every delivery that
    reached the database, shared by all instances) plus this host's duplicates answered
    from memory or Redis, which never reach the database."""
    local_dups = int(local.get("local_duplicates", 0))
    received = sum(outcomes.values()) + local_dups
    duplicates = outcomes.get("duplicate", 0) + local_dups
    count = local.get("duration_count", 0.0)
    avg_ms = local.get("duration_sum", 0.0) / count * 1000 if count else 0.0
    return {
        "received_today": received,
        "duplicate_rate": round(min(1.0, duplicates / received), 4) if received else 0.0,
        "average_response_time_ms": round(avg_ms, 3),
    }


class StatsService:
    """Computes `/api/v1/payments/stats`, at most once per STATS_CACHE_SECONDS."""

    def __init__(self, baseline: DailyBaseline) -> None:
        self.baseline = baseline
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    def local_today(self) -> dict[str, float]:
        return self.baseline.today(counter_totals(metrics_registry()))

    async def get(self, pool: asyncpg.Pool) -> dict[str, Any]:
        async with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < STATS_CACHE_SECONDS:
                return self._cached[1]
            body = await self._compute(pool)
            self._cached = (time.monotonic(), body)
            return body

    async def _compute(self, pool: asyncpg.Pool) -> dict[str, Any]:
        since = midnight_utc()
        local = self.local_today()
        async with pool.acquire(timeout=QUERY_TIMEOUT) as conn:
            row = await conn.fetchrow(_STATS_SQL, since, timeout=QUERY_TIMEOUT * 2)
            rows = await conn.fetch(_WEBHOOKS_TODAY_SQL, since, timeout=QUERY_TIMEOUT * 2)
        assert row is not None
        outcomes = {r["outcome"]: int(r["n"]) for r in rows}
        avg_batch = row["average_batch_ms"]
        return {
            "staging": {
                "processed_today": int(row["processed_today"]),
                "pending_count": int(row["pending_count"]),
                "average_batch_time_ms": round(float(avg_batch), 3) if avg_batch else 0.0,
            },
            "webhooks": webhook_stats(outcomes, local),
        }


# ---------------------------------------------------------------- gauges


def _default_partitions_sql(tables: Iterable[str]) -> str:
    parts = ",\n".join(f"(SELECT count(*) FROM payment_service.{t}_default) AS {t}" for t in tables)
    return f"SELECT {parts}"


# The outbox counts are functions that keep to their partial indexes (sql/005).
_HEALTH_COUNTS_SQL = (
    _default_partitions_sql(DEFAULT_PARTITION_TABLES)
    + """,
    payment_service.outbox_dead_letters() AS dead"""
)


# Counting a backlog is O(rows): past this many the gauge stops counting (the age of the
# oldest event, an index lookup, is what the alert watches). With no relay draining the
# outbox at 5,000/s, a cap of 100,000 made every refresh a 100-300 ms scan that stole the
# writers' CPU: p99 102-147 ms against 65-67 ms with this cap, two pairs of 60 s runs.
PENDING_COUNT_MAX = 10_000

_GAUGES_SQL = f"""
SELECT
    payment_service.outbox_pending({PENDING_COUNT_MAX}) AS pending,
    (SELECT extract(epoch FROM now() - created_at) FROM payment_service.outbox
      WHERE dead_lettered_at IS NULL ORDER BY id LIMIT 1) AS oldest_age,
    (SELECT count(*) FROM payment_service.payment_staging WHERE processed IS NOT TRUE) AS backlog
"""


@dataclass(frozen=True)
class Snapshot:
    outbox_pending: int
    outbox_oldest_age: float
    dead_letters: int
    staging_backlog: int
    default_rows: dict[str, int]


class GaugeRefresher:
    """Sets the database-derived gauges. One round is a couple of cheap queries (partial
    indexes for the outbox and staging backlog; DEFAULT partitions are normally empty)."""

    def __init__(self, pool: asyncpg.Pool, pool_gauges: Callable[[], None] | None = None) -> None:
        self.pool = pool
        self.pool_gauges = pool_gauges
        self.last: Snapshot | None = None
        self._failing = False

    async def health_counts(self, timeout: float = QUERY_TIMEOUT) -> tuple[dict[str, int], int]:
        """Rows in DEFAULT partitions (gauges set) and dead letters: cheap enough to ask on
        every health check (empty partitions, a partial index)."""
        async with self.pool.acquire(timeout=timeout) as conn:
            row = await conn.fetchrow(_HEALTH_COUNTS_SQL, timeout=timeout)
        assert row is not None
        counts = {t: int(row[t]) for t in DEFAULT_PARTITION_TABLES}
        _set_default_gauges(counts)
        return counts, int(row["dead"])

    async def refresh(self) -> Snapshot:
        from gateway.observability import metrics

        if self.pool_gauges is not None:
            self.pool_gauges()
        async with self.pool.acquire(timeout=QUERY_TIMEOUT) as conn:
            row = await conn.fetchrow(_GAUGES_SQL, timeout=QUERY_TIMEOUT)
        assert row is not None
        default_rows, dead = await self.health_counts()
        snap = Snapshot(
            outbox_pending=int(row["pending"]),
            outbox_oldest_age=float(row["oldest_age"] or 0.0),
            dead_letters=dead,
            staging_backlog=int(row["backlog"]),
            default_rows=default_rows,
        )
        metrics.outbox_pending.set(snap.outbox_pending)
        metrics.outbox_oldest_age.set(snap.outbox_oldest_age)
        metrics.dead_letters.set(snap.dead_letters)
        metrics.staging_backlog.set(snap.staging_backlog)
        self.last = snap
        return snap

    async def run(
        self,
        interval: float,
        on_round: Callable[[], object] | None = None,
        *,
        database: bool = True,
    ) -> None:
        """Refresh every `interval` seconds; with `database` False only this process's
        own pool gauges (another process of the host queries the database)."""
        while True:
            if not database:
                if self.pool_gauges is not None:
                    self.pool_gauges()
            else:
                try:
                    await self.refresh()
                    if self._failing:
                        log.info("gauge refresh recovered")
                    self._failing = False
                except Exception as exc:
                    # Skip the round (database down, usually): gauges keep their last values.
                    if not self._failing:
                        log.warning("gauge refresh skipped: %s", type(exc).__name__)
                    self._failing = True
            if on_round is not None:
                on_round()
            await asyncio.sleep(interval)


def _set_default_gauges(counts: Mapping[str, int]) -> None:
    from gateway.observability import metrics

    for table, n in counts.items():
        metrics.partition_default_rows.labels(table=table).set(n)


def health_extras(refresher: GaugeRefresher) -> Callable[[], Awaitable[dict[str, Any]]]:
    """Rows in a DEFAULT partition are a warning, not an outage: writes still succeed, but
    partition maintenance has to move them before it can create their month."""

    async def extras() -> dict[str, Any]:
        counts: dict[str, int] | None
        dead: int | None
        try:
            counts, dead = await refresher.health_counts(timeout=1.0)
        except _DB_ERRORS:
            counts = refresher.last.default_rows if refresher.last else None
            dead = refresher.last.dead_letters if refresher.last else None
        warnings: list[str] = []
        total = sum(counts.values()) if counts is not None else None
        if counts and total:
            where = ", ".join(f"{t}: {n}" for t, n in counts.items() if n)
            warnings.append(
                f"{total} rows in DEFAULT partitions ({where}); partition maintenance moves them"
            )
        if dead:
            warnings.append(f"{dead} outbox events dead-lettered (paygate dlq list)")
        return {"default_partition_rows": total, "warnings": warnings}

    return extras


# ---------------------------------------------------------------- wiring


def install(app: web.Application) -> None:
    settings = app[appkeys.SETTINGS]
    baseline = DailyBaseline()
    if _multiprocess_dir() is None:
        # One process, one app: what the counters held before this app existed is not its
        # traffic. (In multiprocess mode the directory is wiped at host start instead.)
        baseline.baseline = counter_totals(metrics_registry())
    stats = StatsService(baseline)

    async def stats_handler(request: web.Request) -> web.Response:
        """Seed 004's processing statistics. Staging figures and webhook deliveries that
        reached the database come from Postgres (today's staging_process_log rows, the
        partial index on unprocessed staging rows, today's webhook_events by outcome).
        Duplicates answered from memory or Redis never write webhook_events, so they, and
        the average response time (the duration histogram's sum/count), come from this
        host's in-process counters since midnight UTC. Cached for a few seconds."""
        try:
            body = await stats.get(request.app[appkeys.POOL])
        except _DB_ERRORS:
            raise ServiceUnavailable(
                "statistics need the database", code="database_unavailable"
            ) from None
        return json_response(body)

    async def refresher_ctx(app: web.Application) -> AsyncIterator[None]:
        probes = app.get(appkeys.PROBES)
        refresher = GaugeRefresher(
            app[appkeys.POOL], probes.pool_gauges if probes is not None else None
        )
        app[appkeys.HEALTH_EXTRAS] = health_extras(refresher)
        # Each round also looks at the counters, so the daily baseline turns over on time.
        task = asyncio.create_task(
            refresher.run(
                REFRESH_SECONDS,
                on_round=stats.local_today,
                database=app.get(appkeys.DATABASE_GAUGES, True),
            )
        )
        yield
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        if _multiprocess_dir() is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # drop this pid's live gauges

    add_get(app, "/api/v1/payments/stats", stats_handler)
    app.cleanup_ctx.append(refresher_ctx)
    app.cleanup_ctx.append(_pending_metrics_ctx)
    if settings.enable_metrics:
        add_get(app, "/metrics", metrics_handler)
        if settings.metrics_port > 0:
            app.cleanup_ctx.append(_metrics_site_ctx)


PENDING_FLUSH_SECONDS = 1.0


async def _pending_metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """Moves the webhook path's held counts (metrics.Children) into prometheus-client
    every second, and once more after the last request has been answered."""
    from gateway.observability import metrics

    async def flush_every_second() -> None:
        while True:
            await asyncio.sleep(PENDING_FLUSH_SECONDS)
            metrics.flush_pending()

    task = asyncio.create_task(flush_every_second(), name="paygate-metrics-flush")
    yield
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
    metrics.flush_pending()


async def _metrics_site_ctx(app: web.Application) -> AsyncIterator[None]:
    """METRICS_PORT: `/metrics` alone on its own port, so scraping can be firewalled apart
    from the webhook port. Every process binds it with SO_REUSEPORT when there are several."""
    settings = app[appkeys.SETTINGS]
    metrics_app = web.Application()
    metrics_app.router.add_get("/metrics", metrics_handler)
    runner = web.AppRunner(metrics_app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(
            runner,
            settings.host,
            settings.metrics_port,
            reuse_port=settings.web_concurrency > 1,
        )
        await site.start()
        yield
    finally:
        await runner.cleanup()
