"""The shared token buckets in Redis: one atomic script per lease, and the instance heartbeat.

A bucket is a hash `paygate:ratelimit:bucket:<channel>` {tokens, ts}, refilled by the
time elapsed on Redis' own clock (`TIME` inside the script, so hosts with skewed clocks
share one bucket correctly), expiring when idle. Each gateway process heartbeats into
the sorted set `paygate:ratelimit:instances` (member: its id, score: Redis time), pruned
by age; its cardinality is the live instance count the fallback divides the rate by.

Short timeouts and the dedup client's circuit breaker: a dead Redis costs one timeout,
then nothing until the breaker half-opens. Scripts run with EVALSHA through redis-py's
Script object (it loads them again after a NOSCRIPT, e.g. a restarted Redis). Works on
Redis 6.2 and 7 (script effects replication is the default on both), and on a Cluster:
each script touches only the one key it is given (a script's keys must share a slot),
so a channel's bucket lives on whichever node owns its slot.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from gateway.clients.redis import bounded_client, note_failure, settings_breaker
from gateway.clients.redis_connect import REDIS_FAILURES, close_client
from gateway.config import Settings
from gateway.observability import metrics

log = logging.getLogger(__name__)

KEY_PREFIX = "paygate:ratelimit:"
INSTANCES_KEY = KEY_PREFIX + "instances"
HEARTBEAT_SECONDS = 1.0
INSTANCE_MAX_AGE_SECONDS = 5.0  # an instance not heard from for this long is not counted

# KEYS[1] bucket; ARGV rate, burst, want, ttl_ms. Returns {granted, wait_seconds_as_string}.
LEASE_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate)
end
local granted = math.min(want, math.floor(tokens))
if granted < 0 then granted = 0 end
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local wait = 0
if granted == 0 then wait = (1 - tokens) / rate end
return {granted, tostring(wait)}
"""

# KEYS[1] instances; ARGV id, max_age_s, ttl_ms. Returns the live count.
HEARTBEAT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('ZCARD', KEYS[1])
"""

_FAILURES = REDIS_FAILURES


def bucket_key(channel: str) -> str:
    return f"{KEY_PREFIX}bucket:{channel}"


def bucket_ttl_ms(rate: float, burst: int) -> int:
    """Idle long enough to refill completely, then the key may go (at least 10 s)."""
    return max(10_000, math.ceil(burst / rate * 1000) * 2)


class RedisLeaseStore:
    def __init__(self, settings: Settings) -> None:
        self.breaker = settings_breaker(settings)
        self.client = bounded_client(settings, max_connections=4)
        self._lease = self.client.register_script(LEASE_SCRIPT)
        self._heartbeat = self.client.register_script(HEARTBEAT_SCRIPT)
        self.instance_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._instances: int | None = None

    def instances(self) -> int | None:
        return self._instances

    async def lease(
        self, channel: str, rate: float, burst: int, want: int
    ) -> tuple[int, float] | None:
        """(tokens granted, seconds until one is back when none was), or None when Redis
        did not answer in time (or the circuit is open)."""
        if not self.breaker.allow():
            return None
        try:
            granted, wait = await self._lease(
                keys=[bucket_key(channel)],
                args=[repr(rate), burst, want, bucket_ttl_ms(rate, burst)],
            )
        except _FAILURES as exc:
            self._failed(exc)
            return None
        self.breaker.success()
        return int(granted), float(wait)

    async def beat(self) -> None:
        if not self.breaker.allow():
            return
        try:
            count = await self._heartbeat(
                keys=[INSTANCES_KEY],
                args=[self.instance_id, INSTANCE_MAX_AGE_SECONDS,
                      int(INSTANCE_MAX_AGE_SECONDS * 4000)],
            )  # fmt: skip
        except _FAILURES as exc:
            self._failed(exc)
            return
        self.breaker.success()
        self._instances = max(1, int(count))
        metrics.rate_limit_instances.set(self._instances)

    async def heartbeats(self, stop: asyncio.Event) -> None:
        """Beat until `stop` is set. Never cancelled mid-command: redis-py's blocking pool
        was seen to hang on close after a command was cancelled under it."""
        while not stop.is_set():
            await self.beat()
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), HEARTBEAT_SECONDS)

    async def close(self) -> None:
        with suppress(*_FAILURES):
            await self.client.zrem(INSTANCES_KEY, self.instance_id)
        await close_client(self.client)

    def _failed(self, exc: BaseException) -> None:
        note_failure(self.breaker, exc, "rate limits fall back to this process's share", log)


@asynccontextmanager
async def lease_store(settings: Settings) -> AsyncIterator[RedisLeaseStore]:
    """The store with its heartbeat running (first beat before yielding, so the count is
    known before the first request when Redis answers)."""
    store = RedisLeaseStore(settings)
    await store.beat()
    stop = asyncio.Event()
    task = asyncio.create_task(store.heartbeats(stop), name="paygate-rate-heartbeat")
    try:
        yield store
    finally:
        stop.set()
        await task
        await store.close()
