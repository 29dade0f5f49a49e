"""Seed 004's processing statistics (`/api/v1/payments/stats`), computed at most once per
STATS_CACHE_SECONDS.

Staging figures come from Postgres (today's staging_process_log rows, the partial index on
unprocessed staging rows). Webhooks received today and the duplicate rate come from
webhook_outcomes (gateway.observability.outcomes): every answer of every instance, the
refusals and the duplicates answered from memory included, the same numbers the console's
overview shows. The average response time (the duration histogram's sum/count) comes from
this host's in-process counters since midnight UTC.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as dtime
from typing import Any

import asyncpg

from gateway.db import counts
from gateway.observability.exposition import counter_totals, metrics_registry, multiprocess_dir
from gateway.observability.outcomes import OutcomeTally

STATS_CACHE_SECONDS = 5.0  # the stats endpoint recomputes at most this often
QUERY_TIMEOUT = 2.0


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


def webhook_stats(
    answered: Mapping[str, int], local: Mapping[str, float]
) -> dict[str, float | int]:
    """Seed 004's `webhooks` block: `answered` is today's webhooks by outcome (every
    instance, every answer), `local` this host's duration counters."""
    received = sum(answered.values())
    duplicates = answered.get("duplicate", 0)
    count = local.get("duration_count", 0.0)
    avg_ms = local.get("duration_sum", 0.0) / count * 1000 if count else 0.0
    return {
        "received_today": received,
        "duplicate_rate": round(min(1.0, duplicates / received), 4) if received else 0.0,
        "average_response_time_ms": round(avg_ms, 3),
    }


class StatsService:
    def __init__(self, baseline: DailyBaseline | None = None) -> None:
        if baseline is None:
            baseline = DailyBaseline()
            if multiprocess_dir() is None:
                # One process, one app: what the counters held before this app existed is
                # not its traffic. (In multiprocess mode the directory is wiped at host
                # start instead.)
                baseline.baseline = counter_totals(metrics_registry())
        self.baseline = baseline
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    def local_today(self) -> dict[str, float]:
        return self.baseline.today(counter_totals(metrics_registry()))

    async def get(self, pool: asyncpg.Pool, tally: OutcomeTally | None = None) -> dict[str, Any]:
        """`tally`: this process's answers not yet in the table, added first."""
        async with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < STATS_CACHE_SECONDS:
                return self._cached[1]
            if tally is not None:
                await tally.flush(pool)
            body = await self._compute(pool)
            self._cached = (time.monotonic(), body)
            return body

    async def _compute(self, pool: asyncpg.Pool) -> dict[str, Any]:
        since = midnight_utc()
        local = self.local_today()
        async with pool.acquire(timeout=QUERY_TIMEOUT) as conn:
            row = await counts.staging_today(conn, since, QUERY_TIMEOUT * 2)
            outcomes = await counts.webhooks_answered(conn, since.date(), QUERY_TIMEOUT * 2)
        avg_batch = row["average_batch_ms"]
        return {
            "staging": {
                "processed_today": int(row["processed_today"]),
                "pending_count": int(row["pending_count"]),
                "average_batch_time_ms": round(float(avg_batch), 3) if avg_batch else 0.0,
            },
            "webhooks": webhook_stats(outcomes, local),
        }
