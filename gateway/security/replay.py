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
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_MAX_ENTRIES = 100_000


class _Window:
    """Delivery ids remembered for `ttl` seconds, at most `max_entries` of them.

    Every entry of a window lives equally long, so insertion order is expiry order:
    writes drop expired entries from the front. (cachetools' TTLCache did the same
    work for ~5x the CPU per write, which showed on the webhook path.)
    """

    __slots__ = ("_items", "clock", "max_entries", "ttl")

    def __init__(self, ttl: int, max_entries: int, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._items: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def get(self, key: str) -> str | None:
        item = self._items.get(key)
        if item is None or item[0] <= self.clock():
            return None
        return item[1]

    def set(self, key: str, value: str) -> None:
        items = self._items
        now = self.clock()
        items.pop(key, None)
        items[key] = (now + self.ttl, value)
        while len(items) > self.max_entries:
            items.popitem(last=False)
        for _ in range(2):  # two out per one in: expired entries never pile up
            first = next(iter(items.items()))
            if first[1][0] > now:
                break
            del items[first[0]]


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
        self._windows: dict[str, _Window] = {}

    def ttl(self, channel: str) -> int:
        return 2 * self.tolerance_of(channel)

    def _window(self, channel: str) -> _Window:
        ttl = self.ttl(channel)
        window = self._windows.get(channel)
        if window is None or window.ttl != ttl:  # a reload changed the tolerance
            window = _Window(ttl, self.max_entries, self.clock)
            self._windows[channel] = window
        return window

    def seen(self, channel: str, delivery_id: str) -> str | None:
        return self._window(channel).get(delivery_id)

    def remember(self, channel: str, delivery_id: str, payment_id: str) -> None:
        self._window(channel).set(delivery_id, payment_id)
