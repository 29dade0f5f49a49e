"""Every piece of application state, as typed keys (one place to see what the app holds).
The request-path parts are typed by their protocols (gateway.ingest.protocols).

Only `gateway/app.py` (which fills the keys) and `gateway/http/` (which reads them in
handlers) touch `app[...]`; every other module gets what it needs as arguments. The
concrete classes are imported for typing only, and none of their modules imports this
one, so no import circle runs through here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
from aiohttp import web

from gateway.config import Settings
from gateway.ingest.protocols import ReplayGuard, SourceGuard, StatusApplier
from gateway.notify import Wakeup
from gateway.security.tokens import Revocations

if TYPE_CHECKING:
    from gateway.clients.redis import RedisCache
    from gateway.ingest.channels import ChannelRegistry
    from gateway.ingest.dedup import Deduplicator
    from gateway.ingest.pipeline import Pipeline
    from gateway.ingest.refusals import RefusalRecorder
    from gateway.ingest.writer import GroupCommitWriter
    from gateway.observability.outcomes import OutcomeTally
    from gateway.observability.probes import HealthProbes
    from gateway.observability.stats import StatsService
    from gateway.security.access import Access, Gate
    from gateway.security.inflight import InFlight


SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
OUTBOX_WAKE = web.AppKey("outbox_wake", Wakeup)
REDIS: web.AppKey[RedisCache | None] = web.AppKey("redis")
DEDUP: web.AppKey[Deduplicator] = web.AppKey("dedup")
WRITER: web.AppKey[GroupCommitWriter] = web.AppKey("writer")
# What a verified delivery goes through (parse, validate, dedup, writer), once they exist.
PIPELINE: web.AppKey[Pipeline] = web.AppKey("pipeline")
CHANNELS: web.AppKey[ChannelRegistry] = web.AppKey("channels")
# Keeps the deliveries refused after verification (422, invalid JSON, ignored types).
REFUSALS: web.AppKey[RefusalRecorder] = web.AppKey("refusals")
PROBES: web.AppKey[HealthProbes] = web.AppKey("probes")
STATS: web.AppKey[StatsService] = web.AppKey("stats")
# Every webhook answered, by channel and outcome, on its way to webhook_outcomes.
OUTCOMES: web.AppKey[OutcomeTally] = web.AppKey("outcomes")

# The request path's parts (each always present: a missing one is a KeyError, never a
# request that skips its check).
SOURCE_GUARD: web.AppKey[SourceGuard] = web.AppKey("source_guard")
REPLAY_GUARD: web.AppKey[ReplayGuard] = web.AppKey("replay_guard")
STATUS_APPLIER: web.AppKey[StatusApplier] = web.AppKey("status_applier")
# The bound on webhook requests in flight in this process (checked by the webhook handler).
INFLIGHT: web.AppKey[InFlight] = web.AppKey("inflight")
# The gate of each access a route may declare (gateway.security.access), run by the request
# context before the handler: it raises a PaygateError to refuse (or returns an awaitable
# that does, when it must ask the database); None means anyone.
ACCESS_GATES: web.AppKey[dict[Access, Gate | None]] = web.AppKey("access_gates")
# The revocation list of ops tokens and console sessions (gateway.db.revocations).
REVOCATIONS: web.AppKey[Revocations] = web.AppKey("revocations")

# Extra /health checks (DEFAULT-partition rows, dead letters), from the gauge refresher.
HEALTH_EXTRAS: web.AppKey[Callable[[], Awaitable[dict[str, Any]]]] = web.AppKey("health_extras")
