"""A budget per source address for webhooks that fail verification.

Verifying a delivery needs its body, so a channel's own rate limit is charged only
after the signature passes: strangers cannot spend a provider's budget. What strangers
can still spend is our time (a body read and an HMAC per request). Each source address
therefore has a bucket that only its failed verifications drain; once it is empty the
source is refused (429 `unverified_rate_limited`) before its next body is read, until the
bucket refills. A source that never fails is never charged, and costs nothing while no
source has failed recently (the table is empty).

IPv6 sources are grouped by /64 (one host usually holds one). The table is bounded:
past `max_sources` the oldest entry is forgotten, which lets that source start afresh
(fails open for it). Per process, in memory. Pure: the clock is injected.
"""

from __future__ import annotations

import ipaddress
import time

from gateway.security.client_ip import IPAddress
from gateway.security.ratelimit import Clock

MAX_SOURCES = 50_000
UNKNOWN = "unknown"  # a client address that could not be established (client_ip: None)


def source_key(addr: IPAddress | None) -> str:
    if addr is None:
        return UNKNOWN
    if addr.version == 6:
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


class UnverifiedSources:
    def __init__(
        self, rate: float, burst: int, *, max_sources: int = MAX_SOURCES,
        clock: Clock = time.monotonic,
    ) -> None:  # fmt: skip
        self.rate = rate
        self.burst = float(burst)
        self.max_sources = max_sources
        self.clock = clock
        self._tokens: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def busy(self) -> bool:
        """Whether any source has a debt: when not, nobody needs to be looked up."""
        return bool(self._tokens)

    def _level(self, key: str, now: float) -> float | None:
        entry = self._tokens.get(key)
        if entry is None:
            return None
        tokens, updated = entry
        tokens = min(self.burst, tokens + max(0.0, now - updated) * self.rate)
        if tokens >= self.burst:
            del self._tokens[key]  # paid off: the source is forgotten
            return None
        return tokens

    def wait(self, key: str) -> float:
        """0.0 when `key` may send a body; otherwise the seconds until it may."""
        tokens = self._level(key, self.clock())
        if tokens is None or tokens >= 1.0:
            return 0.0
        return (1.0 - tokens) / self.rate

    def failed(self, key: str) -> None:
        """One more delivery from `key` failed verification."""
        if not self.enabled:
            return
        now = self.clock()
        tokens = self._level(key, now)
        if tokens is None:
            while len(self._tokens) >= self.max_sources:
                del self._tokens[next(iter(self._tokens))]
            tokens = self.burst
        self._tokens[key] = (max(0.0, tokens - 1.0), now)
