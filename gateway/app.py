"""The application factory: `create_app(settings)` wires every part and the route table.

Every part is imported by name; nothing is discovered, so a missing module stops the
process instead of starting a gateway without its allowlists, rate limits or ops-API
token check. This module and `gateway/http/` are the only ones that touch `app[...]`.

One cleanup context per resource, opened in order and closed in reverse: pool, Redis,
dedup (warmed before the instance listens, so it is ready when it reports ready), the
status-update service, the group-commit writer, the gauges and metrics tasks (the
background workers run in a process of their own: workers/cli/serve.py). The writer stops
after aiohttp has finished the requests in flight, so every accepted delivery is
committed and answered on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager, suppress
from typing import Any

from aiohttp import web

from gateway import appkeys, security
from gateway.clients.rate_leases import lease_store
from gateway.clients.redis import RedisCache
from gateway.config import Settings
from gateway.db.pool import create_pool
from gateway.http.console.session import console_gate
from gateway.http.metrics import metrics_handler
from gateway.http.routes import add_routes
from gateway.ingest.channels import load_channels
from gateway.ingest.dedup import Deduplicator
from gateway.ingest.pipeline import Pipeline
from gateway.ingest.refusals import RefusalRecorder
from gateway.ingest.status_updates import StatusService
from gateway.ingest.writer import GroupCommitWriter
from gateway.notify import Wakeup
from gateway.observability import exposition, gauges, metrics
from gateway.observability.probes import HealthProbes
from gateway.observability.stats import StatsService
from gateway.security.reload import reload_on_sighup

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    database_gauges: bool = True,
) -> web.Application:
    """`database_gauges` False: an extra server process of a host, whose first process
    refreshes the database-derived gauges for all of them (they merge as livemax)."""
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[appkeys.SETTINGS] = settings
    app[appkeys.OUTBOX_WAKE] = Wakeup.from_env()
    guard = security.build(settings, load_channels(settings))
    app[appkeys.CHANNELS] = guard.channels
    metrics.zero_channel_series(guard.channels.names())  # in the first scrape
    app[appkeys.SOURCE_GUARD] = guard.source_guard
    app[appkeys.REPLAY_GUARD] = guard.replay_guard
    app[appkeys.INFLIGHT] = guard.inflight
    app[appkeys.REQUEST_GATES] = [guard.ops_gate, console_gate(settings.admin_jwt_secret)]
    statuses = StatusService(
        settings,
        lambda: app[appkeys.POOL],
        lambda: app.get(appkeys.DEDUP),
        app[appkeys.OUTBOX_WAKE],
    )
    app[appkeys.STATUS_APPLIER] = statuses
    app[appkeys.STATS] = StatsService()
    app[appkeys.REFUSALS] = RefusalRecorder(lambda: app[appkeys.POOL])

    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        app[appkeys.POOL] = await create_pool(settings)
        yield
        await app[appkeys.POOL].close()

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        cache = RedisCache(settings) if settings.enable_redis_cache and settings.redis_url else None
        app[appkeys.REDIS] = cache
        yield
        if cache is not None:
            await cache.close()

    async def rate_leases_ctx(app: web.Application) -> AsyncIterator[None]:
        """Shared channel buckets: the lease store and its instance heartbeat."""
        limiter = guard.shared_limiter
        if limiter is None:
            yield
            return
        async with lease_store(settings) as store:
            limiter.attach(store)
            yield
            limiter.attach(None)

    async def dedup_ctx(app: web.Application) -> AsyncIterator[None]:
        dedup = Deduplicator(settings, app[appkeys.REDIS])
        await dedup.warm(app[appkeys.POOL], settings.cache_warm_count)
        app[appkeys.DEDUP] = dedup
        app[appkeys.PROBES] = HealthProbes(settings, app[appkeys.POOL], app[appkeys.REDIS])
        yield
        await dedup.close()

    async def writer_ctx(app: web.Application) -> AsyncIterator[None]:
        writer = GroupCommitWriter(
            app[appkeys.POOL],
            settings,
            app[appkeys.DEDUP],
            app[appkeys.OUTBOX_WAKE],
            after_commit=[statuses.parked_hook()],
        )
        app[appkeys.WRITER] = writer
        app[appkeys.PIPELINE] = Pipeline(
            settings, app[appkeys.DEDUP], writer, statuses, app[appkeys.REPLAY_GUARD]
        )
        await writer.start()
        app[appkeys.REFUSALS].start()
        yield
        await writer.stop(timeout=settings.shutdown_timeout_seconds)
        await app[appkeys.REFUSALS].stop()

    async def gauges_ctx(app: web.Application) -> AsyncIterator[None]:
        refresher = gauges.GaugeRefresher(app[appkeys.POOL], app[appkeys.PROBES].pool_gauges)
        app[appkeys.HEALTH_EXTRAS] = gauges.health_extras(refresher)
        if database_gauges:
            await refresher.report_replication()  # before listening: synchronous or not
        # Each round also looks at the counters, so the daily baseline turns over on time.
        rounds = refresher.run(
            gauges.REFRESH_SECONDS,
            on_round=app[appkeys.STATS].local_today,
            database=database_gauges,
        )
        async with _background(rounds, "paygate-gauges"):
            yield
        exposition.mark_process_dead()

    async def held_metrics_ctx(app: web.Application) -> AsyncIterator[None]:
        """The webhook path's held counts reach prometheus-client every second, and once
        more after the last request has been answered."""
        async with _background(gauges.flush_held_metrics(), "paygate-metrics-flush"):
            yield
        metrics.flush_pending()

    async def sighup_ctx(app: web.Application) -> AsyncIterator[None]:
        async with reload_on_sighup(app[appkeys.CHANNELS], settings):
            yield

    app.cleanup_ctx.extend(
        [
            pool_ctx,
            redis_ctx,
            rate_leases_ctx,
            dedup_ctx,
            writer_ctx,
            gauges_ctx,
            held_metrics_ctx,
            sighup_ctx,
        ]
    )
    if settings.enable_metrics and settings.metrics_port > 0:
        app.cleanup_ctx.append(_metrics_site_ctx)
    add_routes(app, settings)
    return app


@asynccontextmanager
async def _background(coro: Coroutine[Any, Any, object], name: str) -> AsyncIterator[None]:
    """A task for the life of a `with` block: cancelled and awaited on the way out."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


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
            runner, settings.host, settings.metrics_port, reuse_port=settings.server_processes > 1
        )
        await site.start()
        yield
    finally:
        await runner.cleanup()
