"""Per-channel token buckets, per process.

Pure: the clock is injected, so tests drive time. A refused request learns from the
bucket itself how long until one token is back (`Retry-After`, whole seconds, >= 1).
Used with RATE_LIMIT_BACKEND=local (or without Redis), where N processes admit N x
rate, and as the fallback share of the shared limiter (`shared_ratelimit`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

Clock = Callable[[], float]


class TokenBucket:
    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.updated = clock()

    def take(self) -> float:
        """0.0 when a token was taken; otherwise the seconds until one is available."""
        now = self.clock()
        elapsed = max(0.0, now - self.updated)
        self.updated = now
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def retry_after_seconds(wait: float) -> int:
    return max(1, math.ceil(wait))


class RateLimiter:
    """One bucket per channel; a reloaded channel with a new rate or burst gets a new bucket."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, channel: str, rate: float | None, burst: int | None) -> float:
        if rate is None:
            return 0.0
        size = burst if burst is not None else max(1, math.ceil(rate))
        bucket = self._buckets.get(channel)
        if bucket is None or bucket.rate != rate or bucket.burst != size:
            bucket = self._buckets[channel] = TokenBucket(rate, size, self.clock)
        return bucket.take()
