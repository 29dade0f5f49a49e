"""Probes of each dependency as this process sees it, kept cheap: a Kafka answer is
cached for a couple of seconds, the database is asked `SELECT 1`, Redis a PING."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC

import asyncpg
from aiokafka.client import AIOKafkaClient

from gateway.clients.kafka import connection_options
from gateway.clients.redis import RedisCache
from gateway.config import Settings
from gateway.db import counts
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
            client = AIOKafkaClient(**connection_options(self.settings), request_timeout_ms=1500)
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
        """The staging backlog and the last batch's start (ISO 8601); None when unknown."""
        try:
            async with self.pool.acquire(timeout=1) as conn:
                backlog, last = await counts.staging_state(conn, timeout=2)
        except Exception:
            return None, None
        return backlog, last.astimezone(UTC).isoformat() if last else None

    def pool_gauges(self) -> None:
        size = self.pool.get_size()
        idle = self.pool.get_idle_size()
        metrics.db_pool_connections.labels("in_use").set(size - idle)
        metrics.db_pool_connections.labels("idle").set(idle)
        metrics.db_pool_connections.labels("max").set(self.pool.get_max_size())
