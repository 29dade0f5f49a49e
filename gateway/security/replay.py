"""Delivery-id replay guard: a delivery answered recently is answered again from memory.

One in-process TTL cache per channel, kept for twice the channel's signature
tolerance (a signed timestamp may be that far in the past or the future; an older
replay already fails the signature check).

It is deliberately memory only. A replay that reaches another instance, or arrives
after a restart, still has no second effect: a payment delivery is answered
"duplicate" by the reference table, a status delivery "duplicate" by the state
machine. Sharing delivery ids through Redis would cost two more round trips per
batch on the hot path to save a database probe that group commit already makes cheap.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cachetools import TTLCache

DEFAULT_MAX_ENTRIES = 100_000


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
        self._caches: dict[str, TTLCache[str, str]] = {}

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
        return self.seen_local(channel, delivery_id)

    def remember(self, channel: str, delivery_id: str, payment_id: str) -> None:
        self._cache(channel)[delivery_id] = payment_id
