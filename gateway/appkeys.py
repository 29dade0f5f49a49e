"""Every piece of application state, as typed keys (one place to see what the app holds)."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
