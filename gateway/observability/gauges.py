"""The gauges only a database query can answer (outbox, dead letters, staging backlog,
DEFAULT partitions), refreshed by one background task so a scrape never waits on a
query; of the server processes one host starts, only the first runs those queries.

This is the only place those gauges are set: the staging worker, partition maintenance
and `/health` count through `gateway.db.counts` too, but leave the gauges to this loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from gateway.db import counts
from gateway.db.errors import describe_text
from gateway.db.replication import Replication, replication
from gateway.observability import metrics

log = logging.getLogger("paygate.observability")

REFRESH_SECONDS = 5.0  # gauge refresh period; tests shorten it
HELD_FLUSH_SECONDS = 1.0  # how often the webhook path's held counts reach prometheus-client
QUERY_TIMEOUT = 2.0
_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True)
class Snapshot:
    outbox_pending: int
    outbox_oldest_age: float
    dead_letters: int
    staging_backlog: int
    default_rows: dict[str, int]


class GaugeRefresher:
    """Sets the database-derived gauges: one connection and two cheap queries a round."""

    def __init__(self, pool: asyncpg.Pool, pool_gauges: Callable[[], None] | None = None) -> None:
        self.pool = pool
        self.pool_gauges = pool_gauges
        self.last: Snapshot | None = None
        self.replication: Replication | None = None
        self._failing = False

    async def health_counts(self, timeout: float = QUERY_TIMEOUT) -> tuple[dict[str, int], int]:
        """Rows in DEFAULT partitions (gauges set) and dead letters: cheap enough to ask on
        every health check."""
        async with self.pool.acquire(timeout=timeout) as conn:
            default_rows, dead = await counts.health_counts(conn, timeout)
        _set_default_gauges(default_rows)
        return default_rows, dead

    async def refresh(self) -> Snapshot:
        if self.pool_gauges is not None:
            self.pool_gauges()
        async with self.pool.acquire(timeout=QUERY_TIMEOUT) as conn:
            pending, oldest, backlog = await counts.outbox_and_backlog(conn, QUERY_TIMEOUT)
            default_rows, dead = await counts.health_counts(conn, QUERY_TIMEOUT)
            self._replication(await replication(conn, QUERY_TIMEOUT))
        _set_default_gauges(default_rows)
        snap = Snapshot(pending, oldest, dead, backlog, default_rows)
        metrics.outbox_pending.set(snap.outbox_pending)
        metrics.outbox_oldest_age.set(snap.outbox_oldest_age)
        metrics.dead_letters.set(snap.dead_letters)
        metrics.staging_backlog.set(snap.staging_backlog)
        self.last = snap
        return snap

    async def report_replication(self) -> Replication | None:
        """At start-up: log and gauge whether the primary replicates synchronously (None,
        with a warning, when the database does not answer now; the rounds retry)."""
        try:
            async with self.pool.acquire(timeout=QUERY_TIMEOUT) as conn:
                return self._replication(await replication(conn, QUERY_TIMEOUT))
        except _DB_ERRORS as exc:
            log.warning("could not ask the database about its replication: %s", describe_text(exc))
            return None

    def _replication(self, now: Replication) -> Replication:
        """Set the gauges; log when it changed (a failover can change it: a promoted
        standby usually has no standby of its own yet)."""
        metrics.db_synchronous_replication.set(1 if now.synchronous else 0)
        hidden = now.hidden
        metrics.db_standbys.labels("sync").set(now.synchronous_standbys)
        metrics.db_standbys.labels("async").set(now.standbys - now.synchronous_standbys - hidden)
        metrics.db_standbys.labels("unknown").set(hidden)
        if now != self.replication:
            level = logging.INFO if now.synchronous or not now.standbys else logging.WARNING
            log.log(level, "database replication: %s", now.describe())
        self.replication = now
        return now

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
                        log.warning("gauge refresh skipped: %s", describe_text(exc))
                    self._failing = True
            if on_round is not None:
                on_round()
            await asyncio.sleep(interval)


def _set_default_gauges(default_rows: Mapping[str, int]) -> None:
    for table, n in default_rows.items():
        metrics.partition_default_rows.labels(table=table).set(n)


def health_extras(refresher: GaugeRefresher) -> Callable[[], Awaitable[dict[str, Any]]]:
    """Rows in a DEFAULT partition are a warning, not an outage: writes still succeed, but
    partition maintenance has to move them before it can create their month."""

    async def extras() -> dict[str, Any]:
        default_rows: dict[str, int] | None
        dead: int | None
        try:
            default_rows, dead = await refresher.health_counts(timeout=1.0)
        except _DB_ERRORS:
            default_rows = refresher.last.default_rows if refresher.last else None
            dead = refresher.last.dead_letters if refresher.last else None
        warnings: list[str] = []
        total = sum(default_rows.values()) if default_rows is not None else None
        if default_rows and total:
            where = ", ".join(f"{t}: {n}" for t, n in default_rows.items() if n)
            warnings.append(
                f"{total} rows in DEFAULT partitions ({where}); partition maintenance moves them"
            )
        if dead:
            warnings.append(f"{dead} outbox events dead-lettered (paygate dlq list)")
        return {"default_partition_rows": total, "warnings": warnings}

    return extras


async def flush_held_metrics() -> None:
    """Move the webhook path's held counts (metrics.Children) into prometheus-client every
    HELD_FLUSH_SECONDS, until cancelled."""
    while True:
        await asyncio.sleep(HELD_FLUSH_SECONDS)
        metrics.flush_pending()
