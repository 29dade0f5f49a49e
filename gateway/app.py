"""The application factory: `create_app(settings)` wires resources and routes.

One cleanup context per resource, opened in order and closed in reverse: pool, Redis,
dedup (warmed before the instance listens, so it is ready when it reports ready),
the group-commit writer. The writer stops after aiohttp has finished the requests
in flight, so every accepted delivery is committed and answered on shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from gateway import appkeys, security
from gateway.clients.redis import RedisCache
from gateway.config import Settings
from gateway.db.pool import create_pool
from gateway.http import ops as ops_api
from gateway.http.context import (
    add_fallback_route,
    add_get,
    add_post,
    require_request_context,
)
from gateway.http.health import HealthProbes, health, live, ready
from gateway.http.webhook import handle_webhook
from gateway.ingest import status_updates as status
from gateway.ingest.channels import load_channels
from gateway.ingest.dedup import Deduplicator
from gateway.ingest.writer import GroupCommitWriter
from gateway.notify import Wakeup
from gateway.observability import gauges as observability

log = logging.getLogger(__name__)


async def _pool_ctx(app: web.Application) -> AsyncIterator[None]:
    app[appkeys.POOL] = await create_pool(app[appkeys.SETTINGS])
    yield
    await app[appkeys.POOL].close()


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    cache = RedisCache(settings) if settings.enable_redis_cache and settings.redis_url else None
    app[appkeys.REDIS] = cache
    yield
    if cache is not None:
        await cache.close()


async def _dedup_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[appkeys.SETTINGS]
    dedup = Deduplicator(settings, app[appkeys.REDIS])
    await dedup.warm(app[appkeys.POOL], settings.cache_warm_count)
    app[appkeys.DEDUP] = dedup
    app[appkeys.PROBES] = HealthProbes(settings, app[appkeys.POOL], app[appkeys.REDIS])
    yield
    await dedup.close()


async def _writer_ctx(app: web.Application) -> AsyncIterator[None]:
    writer = GroupCommitWriter(
        app[appkeys.POOL],
        app[appkeys.SETTINGS],
        app[appkeys.DEDUP],
        app[appkeys.OUTBOX_WAKE],
        after_commit=app.get(appkeys.AFTER_COMMIT),
    )
    app[appkeys.WRITER] = writer
    await writer.start()
    yield
    await writer.stop(timeout=app[appkeys.SETTINGS].shutdown_timeout_seconds)


# Feature modules: each `install(app)` adds its routes, contexts and app keys. Imported
# explicitly: a missing module must stop the process, never start a gateway without its
# allowlists, rate limits or ops-API token check.
FEATURES = (
    observability,  # /metrics, /api/v1/payments/stats, pool gauges
    security,  # allowlists, rate limits, replay guard, ops API auth, SIGHUP reload
    status,  # payment lifecycle: status updates through the state machine
    ops_api,  # reconciliation and DLQ endpoints
)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[appkeys.SETTINGS] = settings
    app[appkeys.REQUEST_GATES] = []
    app[appkeys.CHANNELS] = load_channels(settings)
    app[appkeys.OUTBOX_WAKE] = Wakeup()
    app.cleanup_ctx.extend([_pool_ctx, _redis_ctx, _dedup_ctx, _writer_ctx])

    add_post(app, "/api/v1/payments/webhook", handle_webhook)
    add_post(app, "/api/v1/payments/webhook/{channel}", handle_webhook)
    add_get(app, "/health", health)
    add_get(app, "/health/live", live)
    add_get(app, "/health/ready", ready)
    for feature in FEATURES:
        feature.install(app)
    add_fallback_route(app)  # JSON 404/405; registered last
    app.on_startup.append(require_request_context)
    return app
