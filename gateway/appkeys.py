"""Every piece of application state, as typed keys (one place to see what the app holds)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
from aiohttp import web

from gateway.config import Settings
from gateway.notify import Wakeup

if TYPE_CHECKING:
    from gateway.clients.redis import RedisCache
    from gateway.extensions import ReplayGuard, SourceGuard, StatusApplier
    from gateway.http.health import HealthProbes
    from gateway.ingest.channels import ChannelRegistry
    from gateway.ingest.dedup import Deduplicator
    from gateway.ingest.writer import AfterCommit, GroupCommitWriter
    from gateway.security.inflight import InFlight

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
OUTBOX_WAKE = web.AppKey("outbox_wake", Wakeup)
REDIS: web.AppKey[RedisCache | None] = web.AppKey("redis")
DEDUP: web.AppKey[Deduplicator] = web.AppKey("dedup")
WRITER: web.AppKey[GroupCommitWriter] = web.AppKey("writer")
CHANNELS: web.AppKey[ChannelRegistry] = web.AppKey("channels")
PROBES: web.AppKey[HealthProbes] = web.AppKey("probes")

# Optional request-path features (gateway/extensions.py describes each seam).
SOURCE_GUARD: web.AppKey[SourceGuard] = web.AppKey("source_guard")
REPLAY_GUARD: web.AppKey[ReplayGuard] = web.AppKey("replay_guard")
STATUS_APPLIER: web.AppKey[StatusApplier] = web.AppKey("status_applier")
# The bound on webhook requests in flight in this process (checked by the webhook handler).
INFLIGHT: web.AppKey[InFlight] = web.AppKey("inflight")
# Checks the request context (gateway.http.context) runs before every handler (ops API
# auth): each raises a PaygateError to refuse. Cheaper than one wrapper per feature.
REQUEST_GATES: web.AppKey[list[Callable[[web.Request], None]]] = web.AppKey("request_gates")

# Hooks the writer runs on its connection after recording new payments (parked status updates).
AFTER_COMMIT: web.AppKey[list[AfterCommit]] = web.AppKey("after_commit")

# False in the extra server processes one host starts (WEB_CONCURRENCY): the first process
# refreshes the database-derived gauges for all of them (they merge as livemax), so a
# backlog is counted once per host, not once per process.
DATABASE_GAUGES: web.AppKey[bool] = web.AppKey("database_gauges")

# Extra /health checks contributed by features running in this process.
HEALTH_EXTRAS: web.AppKey[Callable[[], Awaitable[dict[str, Any]]]] = web.AppKey("health_extras")
