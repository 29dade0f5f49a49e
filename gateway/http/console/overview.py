"""The console's front page: today's deliveries and duplicate rate, the last 24 hours as
a chart, the outbox, dead letters, staging, DEFAULT partitions and dependency health."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from gateway import appkeys
from gateway.db import counts, overview
from gateway.db.deliveries import OUTCOMES
from gateway.http.console import chart
from gateway.http.console.paging import href
from gateway.http.console.render import render
from gateway.http.console.retention import retention_rows
from gateway.observability.stats import midnight_utc, webhook_stats

QUERY_TIMEOUT = 5.0
CHART_CACHE_SECONDS = 30.0  # the chart reads a day of index entries: once per 30 s at most
_chart_cache: dict[int, tuple[float, dict[str, list[int]], datetime]] = {}


async def _chart(request: web.Request) -> tuple[dict[str, list[int]], datetime]:
    key = id(request.app)
    cached = _chart_cache.get(key)
    if cached is not None and time.monotonic() - cached[0] < CHART_CACHE_SECONDS:
        return cached[1], cached[2]
    end = datetime.now(UTC)
    rows = await overview.deliveries_per_minute(
        request.app[appkeys.POOL], end - timedelta(minutes=chart.MINUTES), end + timedelta(
            minutes=1), QUERY_TIMEOUT
    )  # fmt: skip
    data = chart.series(rows, end)
    _chart_cache[key] = (time.monotonic(), data, end)
    return data, end


def outcome_rows(
    answered: dict[str, int], kept: dict[str, int], since: datetime
) -> list[dict[str, Any]]:
    """Today's answers by outcome, most first, with how many of them were kept as
    deliveries (a link to them) and the rest answered without being stored."""
    rows = []
    for outcome in sorted(answered.keys() | kept.keys(), key=lambda o: (-answered.get(o, 0), o)):
        stored = kept.get(outcome, 0)
        link = href("/console/deliveries", {"outcome": outcome, "from": since.date()})
        rows.append({"outcome": outcome, "answered": answered.get(outcome, 0), "kept": stored,
                     "link": link if outcome in OUTCOMES else None})  # fmt: skip
    return rows


async def overview_page(request: web.Request) -> web.Response:
    app = request.app
    pool = app[appkeys.POOL]
    probes = app[appkeys.PROBES]
    await app[appkeys.OUTCOMES].flush(pool)  # this process's last second, before reading
    midnight = midnight_utc()
    async with pool.acquire(timeout=QUERY_TIMEOUT) as conn:
        answered = await counts.webhooks_answered(conn, midnight.date(), QUERY_TIMEOUT)
        kept = await counts.webhooks_today(conn, midnight, QUERY_TIMEOUT)
        pending, oldest, backlog = await counts.outbox_and_backlog(conn, QUERY_TIMEOUT)
        dead = await counts.dead_letters(conn)
        _, last_run = await counts.staging_state(conn, QUERY_TIMEOUT)
        defaults = await counts.default_partition_rows(conn)
    data, end = await _chart(request)
    retained = await retention_rows(request)
    db_ok, redis_ok, kafka_ok = await asyncio.gather(
        probes.database(), probes.redis_ok(), probes.kafka()
    )
    local = app[appkeys.STATS].local_today()
    figures: dict[str, Any] = webhook_stats(answered, local)
    return render(
        request, "overview.html", today=outcome_rows(answered, kept, midnight), figures=figures,
        chart=chart.svg(data, end), legend=chart.legend(data),
        outbox={"pending": pending, "capped": pending >= counts.PENDING_COUNT_MAX,
                "oldest_seconds": round(oldest, 1)},
        dead_letters=dead, staging={"backlog": backlog, "last_run": last_run},
        defaults=defaults, retention=retained,
        health={"database": db_ok, "redis": redis_ok, "kafka": kafka_ok},
    )  # fmt: skip
