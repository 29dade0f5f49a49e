"""The shared limiter's local side: block sizing, spending leased tokens, leasing ahead,
and the fallback share, against an in-memory store and a fake clock (pure: the real
store's script is tested against Redis in tests/gateway/clients/test_rate_leases.py)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.security.shared_ratelimit import (
    SharedRateLimiter,
    block_size,
    fallback_share,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class MemoryStore:
    """A shared bucket with the script's arithmetic; `down` makes it unavailable."""

    def __init__(self, clock: Clock, count: int | None = 3) -> None:
        self.clock = clock
        self.tokens: float | None = None
        self.updated = 0.0
        self.leases = 0
        self.down = False
        self.count = count
        self.gate: asyncio.Event | None = None  # set: the lease answers

    def instances(self) -> int | None:
        return self.count

    async def lease(
        self, channel: str, rate: float, burst: int, want: int
    ) -> tuple[int, float] | None:
        self.leases += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            return None
        now = self.clock()
        if self.tokens is None:
            self.tokens, self.updated = float(burst), now
        self.tokens = min(burst, self.tokens + (now - self.updated) * rate)
        self.updated = now
        granted = min(want, int(self.tokens))
        self.tokens -= granted
        return granted, 0.0 if granted else (1 - self.tokens) / rate


def limiter(store: MemoryStore | None, clock: Clock, floor: float = 0.0) -> SharedRateLimiter:
    return SharedRateLimiter(store, timeout=0.05, floor=floor, default_instances=2, clock=clock)


async def decide(lim: SharedRateLimiter, rate: float = 100.0, burst: int = 10) -> float:
    wait = lim.take("c", rate, burst)
    return wait if isinstance(wait, float) else await wait


def test_block_is_a_twentieth_of_the_rate_within_one_and_the_burst() -> None:
    assert block_size(1000, 400) == 50
    assert block_size(1000, 20) == 20
    assert block_size(3, 10) == 1
    assert block_size(50, 5) == 3


def test_fallback_share_divides_by_instances_unless_the_floor_is_larger() -> None:
    assert fallback_share(90, 30, 3, 0.0) == (pytest.approx(30.0), 10)
    assert fallback_share(90, 30, 3, 0.5) == (pytest.approx(45.0), 15)
    assert fallback_share(90, 30, 0, 0.0) == (pytest.approx(90.0), 30)  # never above the rate
    assert fallback_share(10, 1, 4, 0.0) == (pytest.approx(2.5), 1)  # burst at least 1


async def test_first_request_waits_for_a_lease_then_the_block_is_spent_locally() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    lim = limiter(store, clock)
    first = lim.take("c", 100.0, 10)
    assert not isinstance(first, float), "an empty block must lease first"
    assert await first == 0.0
    assert store.leases == 1
    # block of 5 (100/20): 4 left, spent without a lease until the block is low
    assert [lim.take("c", 100.0, 10) for _ in range(2)] == [0.0, 0.0]
    assert store.leases == 1


async def test_the_next_block_is_leased_ahead_when_the_block_runs_low() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    lim = limiter(store, clock)
    assert await decide(lim) == 0.0  # 4 of 5 left
    for _ in range(2):
        assert lim.take("c", 100.0, 10) == 0.0  # 2 left: low, a lease starts
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert store.leases == 2
    assert [lim.take("c", 100.0, 10) for _ in range(7)] == [0.0] * 7  # 2 + 5


async def test_admitted_never_exceeds_the_shared_bucket() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    a, b = limiter(store, clock), limiter(store, clock)
    admitted = 0
    for _ in range(20):
        for lim in (a, b):
            if await decide(lim) == 0.0:
                admitted += 1
    assert admitted == 10  # the burst, whoever asked
    clock.now += 0.5  # 50 tokens refill; capped at burst 10
    for _ in range(20):
        for lim in (a, b):
            if await decide(lim) == 0.0:
                admitted += 1
    assert admitted == 20


async def test_an_empty_shared_bucket_refuses_without_asking_again_until_its_wait() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    lim = limiter(store, clock)
    for _ in range(10):
        assert await decide(lim) == 0.0
    assert await decide(lim) > 0  # a lease came back empty
    leases = store.leases
    assert lim.take("c", 100.0, 10) == pytest.approx(0.01)
    assert store.leases == leases
    clock.now += 0.02
    assert await decide(lim) == 0.0


async def test_redis_down_falls_back_to_the_share_and_recovers() -> None:
    clock = Clock()
    store = MemoryStore(clock, count=4)
    store.down = True
    lim = limiter(store, clock)
    results = [await decide(lim, rate=100.0, burst=20) for _ in range(10)]
    assert lim.in_fallback
    assert results.count(0.0) == 5  # the share's burst: 20 / 4
    clock.now += 0.1  # the share refills at 25/s: 2.5 tokens
    assert [await decide(lim, rate=100.0, burst=20) for _ in range(3)].count(0.0) == 2
    store.down = False
    clock.now += 1.0
    await decide(lim, rate=100.0, burst=20)
    await asyncio.sleep(0)
    assert not lim.in_fallback
    assert await decide(lim, rate=100.0, burst=20) == 0.0


async def test_a_slow_lease_is_bounded_by_the_timeout_and_decided_on_the_share() -> None:
    clock = Clock()
    store = MemoryStore(clock, count=None)  # never heard: WEB_CONCURRENCY (2) is the count
    store.gate = asyncio.Event()
    lim = limiter(store, clock)
    assert await decide(lim, rate=100.0, burst=10) == 0.0  # after 50 ms, from the share
    assert lim.in_fallback
    assert fallback_share(100.0, 10, lim.instances(), 0.0) == (pytest.approx(50.0), 5)
    store.gate.set()


async def test_leased_tokens_expire_unspent() -> None:
    clock = Clock()
    store = MemoryStore(clock)
    lim = limiter(store, clock)
    assert await decide(lim) == 0.0
    leases = store.leases
    clock.now += 5.0
    pending = lim.take("c", 100.0, 10)
    assert not isinstance(pending, float), "the old block is gone"
    assert await pending == 0.0
    assert store.leases == leases + 1


def test_no_rate_means_no_limit() -> None:
    lim = limiter(None, Clock())
    assert lim.take("c", None, None) == 0.0
