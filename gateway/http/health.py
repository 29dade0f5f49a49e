"""Health: what each dependency looks like from here, cheaply.

`/health` is seed 004's shape and turns unhealthy (503) when any dependency fails.
`/health/ready` only asks what writes need: the database and a writer with room;
Redis and Kafka outages cost speed and delay events, never acknowledged writes.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC
from typing import Any

import asyncpg
from aiohttp import web
from aiokafka.client import AIOKafkaClient

from gateway import appkeys
from gateway.clients.redis import RedisCache
from gateway.config import Settings
from gateway.http.context import json_response
from gateway.observability import metrics

KAFKA_CACHE_SECONDS = 2.0


class HealthProbes:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, redis: RedisCache | None) -> None:
        self.settings = settings
        self.pool = pool
        self.redis = redis
        self._kafka: tuple[float, bool] | None = None
        self._kafka_lock = asyncio.Lock()

    async def database(self) -> bool:
        try:
            async with self.pool.acquire(timeout=1) as conn:
                await conn.fetchval("SELECT 1", timeout=1)
            return True
        except Exception:
            return False

    async def redis_ok(self) -> bool:
        if self.redis is None:
            return False
        return await self.redis.ping()

    async def kafka(self) -> bool:
        if not self.settings.kafka_bootstrap_servers:
            return False
        async with self._kafka_lock:
            now = time.monotonic()
            if self._kafka is not None and now - self._kafka[0] < KAFKA_CACHE_SECONDS:
                return self._kafka[1]
            client = AIOKafkaClient(
                bootstrap_servers=self.settings.kafka_bootstrap_servers, request_timeout_ms=1500
            )
            try:
                await asyncio.wait_for(client.bootstrap(), 2)
                ok = True
            except Exception:
                ok = False
            finally:
                await client.close()
            self._kafka = (time.monotonic(), ok)
            return ok

    async def staging(self) -> tuple[int | None, str | None]:
        try:
            async with self.pool.acquire(timeout=1) as conn:
                row = await conn.fetchrow(
                    """
                    SELECT (SELECT count(*) FROM payment_service.payment_staging
                            WHERE processed IS NOT TRUE) AS backlog,
                           (SELECT max(started_at) FROM payment_service.staging_process_log) AS last
                    """,
                    timeout=2,
                )
        except Exception:
            return None, None
        assert row is not None
        last = row["last"]
        metrics.staging_backlog.set(row["backlog"])
        return row["backlog"], last.astimezone(UTC).isoformat() if last else None

    def pool_gauges(self) -> None:
        size = self.pool.get_size()
        idle = self.pool.get_idle_size()
        metrics.db_pool_connections.labels("in_use").set(size - idle)
        metrics.db_pool_connections.labels("idle").set(idle)
        metrics.db_pool_connections.labels("max").set(self.pool.get_max_size())


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
    extra = request.app.get(appkeys.HEALTH_EXTRAS)
    if extra is not None:
        checks.update(await extra())
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
