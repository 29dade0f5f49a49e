"""Deduplication hints: L1 (in-process LRU) and L2 (Redis).

Neither is the truth: `payment_references` in Postgres is (see gateway/db/payments.py). A hint only
short-circuits a delivery we already know to be an exact duplicate: same reference,
same business fields, same status. Everything else falls through to the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import asyncpg
from cachetools import LRUCache

from gateway.clients.redis import RedisCache
from gateway.config import Settings
from gateway.db.payments import recent_references

log = logging.getLogger(__name__)


# Not frozen: a frozen dataclass sets each field through object.__setattr__, and one is
# decoded for every memory-cache hit (0.68 -> 0.37 µs).
@dataclass(slots=True)
class Known:
    payment_id: str
    payload_hash: str
    status: str

    def encode(self) -> bytes:
        return f"{self.payment_id}|{self.payload_hash}|{self.status}".encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> Known | None:
        if not raw:
            return None
        try:
            payment_id, payload_hash, status = raw.decode().split("|")
        except ValueError:
            return None  # a foreign or corrupt value is only a miss
        return cls(payment_id, payload_hash, status)


# Fresh entries wait at most this long for the next batch's Redis call to carry them.
PUBLISH_DELAY_SECONDS = 0.05


class Deduplicator:
    def __init__(self, settings: Settings, redis: RedisCache | None) -> None:
        # L1 holds the packed form (bytes, as in Redis), not Known objects: bytes are not
        # tracked by CPython's collector, and a cache of 100,000 objects was one object
        # per payment surviving every young-generation pass (20-40 ms pauses every few
        # seconds at 5,000/s, each promoting more into the full collections).
        self.l1: LRUCache[str, bytes] | None = (
            LRUCache(maxsize=settings.memory_cache_max_size)
            if settings.enable_memory_cache
            else None
        )
        self.redis = redis
        # Entries recorded but not yet in Redis: they ride along with the next lookup, so a
        # batch costs one Redis round trip for both its reads and the previous writes.
        self._unpublished: dict[str, bytes] = {}
        self._flush: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()

    def lookup_local(self, reference: str) -> Known | None:
        return Known.decode(self.l1.get(reference)) if self.l1 is not None else None

    async def lookup_remote(self, references: Sequence[str]) -> list[Known | None]:
        if self.redis is None:
            return [None] * len(references)
        pending, self._unpublished = self._unpublished, {}
        values = await self.redis.exchange(references, pending)
        return [Known.decode(v) for v in values]

    def publish_later(self, items: Sequence[tuple[str, Known]]) -> None:
        """Queue entries for Redis: sent with the next lookup, or on their own shortly."""
        if self.redis is None or not items:
            return
        self._unpublished.update((ref, known.encode()) for ref, known in items)
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(
                PUBLISH_DELAY_SECONDS, self._start_flush
            )

    def _start_flush(self) -> None:
        self._flush = None
        if self._unpublished:
            task = asyncio.get_running_loop().create_task(self.flush())
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    async def flush(self) -> None:
        pending, self._unpublished = self._unpublished, {}
        if self.redis is not None and pending:
            await self.redis.exchange((), pending)

    async def close(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        await self.flush()
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)

    def remember(self, items: Iterable[tuple[str, Known]]) -> None:
        if self.l1 is not None:
            for reference, known in items:
                self.l1[reference] = known.encode()

    async def publish(self, items: Sequence[tuple[str, Known]]) -> None:
        """Write entries to Redis now (a status change must not wait for the next batch)."""
        if self.redis is not None and items:
            await self.redis.exchange((), {ref: known.encode() for ref, known in items})

    def forget(self, reference: str) -> None:
        if self.l1 is not None:
            self.l1.pop(reference, None)

    async def warm(self, pool: asyncpg.Pool, count: int) -> int:
        """Load the most recent references into L1 before the instance reports ready."""
        if self.l1 is None or count <= 0:
            return 0
        rows = await recent_references(pool, min(count, self.l1.maxsize))
        self.remember(
            (r["reference_number"], Known(str(r["payment_id"]), r["payload_hash"], r["status"]))
            for r in rows
        )
        log.info("warmed the reference cache with %d entries", len(rows))
        return len(rows)
