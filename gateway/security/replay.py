"""Delivery-id replay guard: a delivery answered recently is answered again from memory.

L1 is an in-process TTL cache per channel, kept for twice the channel's signature
tolerance (a signed timestamp may be that far in the past or the future; an older
replay already fails the signature check). With Redis enabled, a miss asks Redis, and
answered deliveries are written there with `SET NX EX` so other instances see them.
Redis lookups and writes are coalesced per event-loop tick (one MGET / one pipeline
for all concurrent requests), never one round trip per request.

Fails OPEN: a Redis error, an open breaker or an evicted entry means "not seen", and
the delivery goes on to the reference table, the real authority, which answers a
replayed payment as a duplicate without a second row or event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from cachetools import TTLCache
from redis.exceptions import RedisError

from gateway import metrics
from gateway.redis_cache import RedisCache

log = logging.getLogger(__name__)

KEY_PREFIX = "paygate:dlv:"
DEFAULT_MAX_ENTRIES = 100_000
_REDIS_ERRORS = (RedisError, OSError, TimeoutError)


class DeliveryReplayGuard:
    def __init__(
        self,
        tolerance_of: Callable[[str], int],
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tolerance_of = tolerance_of
        self.max_entries = max_entries
        self.clock = clock
        self.redis: RedisCache | None = None
        self._caches: dict[str, TTLCache[str, str]] = {}
        self._gets: dict[str, list[asyncio.Future[str | None]]] = {}
        self._sets: dict[str, tuple[str, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def ttl(self, channel: str) -> int:
        return 2 * self.tolerance_of(channel)

    def _cache(self, channel: str) -> TTLCache[str, str]:
        ttl = self.ttl(channel)
        cache = self._caches.get(channel)
        if cache is None or cache.ttl != ttl:  # a reload changed the tolerance
            cache = TTLCache(maxsize=self.max_entries, ttl=ttl, timer=self.clock)
            self._caches[channel] = cache
        return cache

    def seen_local(self, channel: str, delivery_id: str) -> str | None:
        return self._cache(channel).get(delivery_id)

    async def seen(self, channel: str, delivery_id: str) -> str | None:
        known = self.seen_local(channel, delivery_id)
        if known is not None or not self._redis_usable():
            return known
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str | None] = loop.create_future()
        key = _key(channel, delivery_id)
        if not self._gets:
            loop.call_soon(self._spawn, self._flush_gets)
        self._gets.setdefault(key, []).append(future)
        value = await future
        if value is not None:
            self._cache(channel)[delivery_id] = value
        return value

    def remember(self, channel: str, delivery_id: str, payment_id: str) -> None:
        self._cache(channel)[delivery_id] = payment_id
        if not self._redis_usable():
            return
        if not self._sets:
            asyncio.get_running_loop().call_soon(self._spawn, self._flush_sets)
        self._sets.setdefault(_key(channel, delivery_id), (payment_id, self.ttl(channel)))

    async def close(self) -> None:
        """Finish the Redis writes already queued (they are best effort)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _redis_usable(self) -> bool:
        return self.redis is not None and self.redis.breaker.allow()

    def _spawn(self, flush: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = asyncio.get_running_loop().create_task(flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush_gets(self) -> None:
        pending, self._gets = self._gets, {}
        keys = list(pending)
        values: list[bytes | str | None] = [None] * len(keys)
        redis = self.redis
        if redis is not None and keys:
            try:
                values = list(await redis.client.mget(keys))
                redis.breaker.success()
            except _REDIS_ERRORS as exc:
                self._failed(redis, exc)
        for key, value in zip(keys, values, strict=True):
            answer = value.decode() if isinstance(value, bytes) else None
            for future in pending[key]:
                if not future.done():
                    future.set_result(answer)

    async def _flush_sets(self) -> None:
        pending, self._sets = self._sets, {}
        redis = self.redis
        if redis is None or not pending:
            return
        try:
            async with redis.client.pipeline(transaction=False) as pipe:
                for key, (payment_id, ttl) in pending.items():
                    pipe.set(key, payment_id, nx=True, ex=ttl)
                await pipe.execute()
            redis.breaker.success()
        except _REDIS_ERRORS as exc:
            self._failed(redis, exc)

    @staticmethod
    def _failed(redis: RedisCache, exc: BaseException) -> None:
        metrics.redis_errors.inc()
        was_open = redis.breaker.is_open
        redis.breaker.failure()
        if redis.breaker.is_open and not was_open:
            log.warning("redis unavailable (%s); replay guard uses memory only", type(exc).__name__)


def _key(channel: str, delivery_id: str) -> str:
    return f"{KEY_PREFIX}{channel}:{delivery_id}"
