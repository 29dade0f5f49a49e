"""Health: what each dependency looks like from here, cheaply.

`/health` is seed 004's shape and turns unhealthy (503) when any dependency fails.
`/health/ready` only asks what writes need: the database and a writer with room;
Redis and Kafka outages cost speed and delay events, never acknowledged writes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway import appkeys
from gateway.http.context import json_response


async def health(request: web.Request) -> web.Response:
    probes = request.app[appkeys.PROBES]
    db, redis_ok, kafka_ok, (backlog, last_run) = await asyncio.gather(
        probes.database(), probes.redis_ok(), probes.kafka(), probes.staging()
    )
    probes.pool_gauges()
    checks: dict[str, Any] = {
        "database": "ok" if db else "error",
        "redis": "ok" if redis_ok else "error",
        "kafka": "ok" if kafka_ok else "error",
        "staging_backlog": backlog,
        "last_staging_run": last_run,
    }
    checks.update(await request.app[appkeys.HEALTH_EXTRAS]())
    healthy = db and redis_ok and kafka_ok
    return json_response(
        {"status": "healthy" if healthy else "unhealthy", "checks": checks}, 200 if healthy else 503
    )


async def live(request: web.Request) -> web.Response:
    return json_response({"status": "alive"})


async def ready(request: web.Request) -> web.Response:
    probes = request.app[appkeys.PROBES]
    writer = request.app[appkeys.WRITER]
    db = await probes.database()
    reasons = []
    if not db:
        reasons.append("database_unreachable")
    if writer.saturated:
        reasons.append("writer_saturated")
    if not writer.accepting:
        reasons.append("shutting_down")
    body = {"status": "ready" if not reasons else "unready", "reasons": reasons}
    return json_response(body, 200 if not reasons else 503)
