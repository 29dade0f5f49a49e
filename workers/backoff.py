"""Every retry delay in paygate: exponential backoff with full jitter, capped.

The outbox relay, the staging batch retries, the status poller's calls to provider
APIs and a worker whose round failed all wait through these two functions.

Full jitter (a uniform draw between zero and the exponential ceiling) spreads the
retries of many rows that failed together, so a broker coming back is not hit by one
synchronised wave. Pure, so it is tested without servers.
"""

from __future__ import annotations

import random
from collections.abc import Callable

# 2**64 times any sane base is already past any cap; stops float overflow for huge attempts.
_MAX_EXPONENT = 64


def backoff_ceiling(attempt: int, base: float, cap: float) -> float:
    """The upper bound of the delay after `attempt` failures (1-based): base * 2**(attempt-1),
    never above `cap`."""
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    if base < 0 or cap < 0:
        raise ValueError("base and cap must be >= 0")
    return min(cap, base * 2.0 ** min(attempt - 1, _MAX_EXPONENT))


def backoff_delay(
    attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retrying after `attempt` failures: uniform in [0, ceiling)."""
    ceiling = backoff_ceiling(attempt, base, cap)
    return ceiling * min(max(rand(), 0.0), 1.0)
