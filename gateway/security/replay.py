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
    work for ~5x the CPU per write, which showed on the webhook path.) Expiries and
    answers sit in two maps of plain floats and strings rather than one of tuples: a
    tuple per delivery survived every young-generation pass of CPython's collector.
    """

    __slots__ = ("_answers", "_expiries", "clock", "max_entries", "ttl")

    def __init__(self, ttl: int, max_entries: int, clock: Callable[[], float]) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._expiries: OrderedDict[str, float] = OrderedDict()
        self._answers: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._expiries)

    def get(self, key: str) -> str | None:
        expiry = self._expiries.get(key)
        if expiry is None or expiry <= self.clock():
            return None
        return self._answers[key]

    def set(self, key: str, value: str) -> None:
        expiries, answers = self._expiries, self._answers
        now = self.clock()
        expiries.pop(key, None)
        expiries[key] = now + self.ttl
        answers[key] = value
        while len(expiries) > self.max_entries:
            del answers[expiries.popitem(last=False)[0]]
        for _ in range(2):  # two out per one in: expired entries never pile up
            oldest, expiry = next(iter(expiries.items()))
            if expiry > now:
                break
            del expiries[oldest], answers[oldest]


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
        # No tolerance lookup here (it is a registry call per request): an entry kept
        # under an older tolerance still names the payment its delivery recorded.
        window = self._windows.get(channel)
        return None if window is None else window.get(delivery_id)

    def remember(self, channel: str, delivery_id: str, payment_id: str) -> None:
        self._window(channel).set(delivery_id, payment_id)
