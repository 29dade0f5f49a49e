"""Every piece of application state, as typed keys (one place to see what the app holds)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
from aiohttp import web

from gateway.config import Settings
from gateway.notify import Wakeup

if TYPE_CHECKING:
    from gateway.channels import ChannelRegistry
    from gateway.dedup import Deduplicator
    from gateway.health import HealthProbes
    from gateway.redis_cache import RedisCache
    from gateway.writer import GroupCommitWriter

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
REDIS = web.AppKey("redis", "RedisCache")
DEDUP = web.AppKey("dedup", "Deduplicator")
WRITER = web.AppKey("writer", "GroupCommitWriter")
CHANNELS = web.AppKey("channels", "ChannelRegistry")
PROBES = web.AppKey("probes", "HealthProbes")
OUTBOX_WAKE = web.AppKey("outbox_wake", Wakeup)

if TYPE_CHECKING:
    from gateway.extensions import ReplayGuard, SourceGuard, StatusApplier

SOURCE_GUARD = web.AppKey("source_guard", "SourceGuard")
REPLAY_GUARD = web.AppKey("replay_guard", "ReplayGuard")
STATUS_APPLIER = web.AppKey("status_applier", "StatusApplier")

# Extra /health checks contributed by workers running in this process (e.g. default-partition rows).
HEALTH_EXTRAS: web.AppKey[Callable[[], Awaitable[dict[str, Any]]]] = web.AppKey("health_extras")

if TYPE_CHECKING:
    from gateway.writer import AfterCommit

# Hooks run in the writer's transaction after new payments were recorded (e.g. parked status updates).
AFTER_COMMIT = web.AppKey("after_commit", list["AfterCommit"])
