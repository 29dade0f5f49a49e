"""Per-channel token buckets shared by every gateway process, through leases.

The bucket itself lives in Redis (`gateway.clients.rate_leases`: one atomic script
per lease, refilled by Redis' own clock). A process never asks Redis per request: it
leases a block of tokens, spends it locally, and leases the next block in the
background once the block runs low. A request waits only when its channel's block is
empty, and then at most the lease timeout.

When Redis is down or slow the process admits its share of the rate on a local bucket:
`rate x max(1 / instances, RATE_LIMIT_FALLBACK_FLOOR)`, instances being the live
instance count last heard from Redis (the heartbeat), or before any was heard this
host's server process count (`WEB_CONCURRENCY`, or one per CPU). Neither fully open
nor closed: N processes together admit about the rate.

Pure apart from asyncio: the clock is injected, the store is a protocol.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable
from typing import Protocol

from gateway.observability import metrics
from gateway.security.ratelimit import Clock, TokenBucket

log = logging.getLogger("paygate.security")

BLOCKS_PER_SECOND = 20  # a block is about 1/20 s of the channel's rate
BLOCK_LIFETIME_SECONDS = 1.0  # unspent leased tokens are dropped after this


class LeaseStore(Protocol):
    """Where the shared buckets live (`gateway.clients.rate_leases.RedisLeaseStore`)."""

    async def lease(
        self, channel: str, rate: float, burst: int, want: int
    ) -> tuple[int, float] | None:
        """(granted, seconds until a token when none was), None when unavailable."""

    def instances(self) -> int | None:
        """The live instance count last heard, None before the first heartbeat."""


def block_size(rate: float, burst: int) -> int:
    """Tokens asked for per lease: ~1/20 s of the rate, at least 1, never above the burst."""
    return max(1, min(burst, math.ceil(rate / BLOCKS_PER_SECOND)))


def fallback_share(rate: float, burst: int, instances: int, floor: float) -> tuple[float, int]:
    """(rate, burst) one process admits on its own while the shared bucket is out of reach."""
    fraction = max(1.0 / max(1, instances), floor)
    fraction = min(1.0, fraction)
    return rate * fraction, max(1, math.ceil(burst * fraction))


class ChannelBlock:
    """One channel's leased tokens in this process, and the lease in flight for it."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.size = block_size(rate, burst)
        self.tokens = 0
        self.expires = 0.0
        self.empty_until = 0.0  # the shared bucket said "none before then"
        self.inflight: asyncio.Task[None] | None = None
        self.fallback: TokenBucket | None = None

    def spend(self, now: float) -> bool:
        if self.tokens > 0 and now < self.expires:
            self.tokens -= 1
            return True
        self.tokens = 0
        return False

    def low(self) -> bool:
        return self.tokens * 2 <= self.size

    def add(self, granted: int, now: float) -> None:
        if now >= self.expires:
            self.tokens = 0
        self.tokens += granted
        self.expires = now + BLOCK_LIFETIME_SECONDS


class SharedRateLimiter:
    """Same `take` contract as `RateLimiter`, plus an awaitable when a lease must come first.

    `take` returns 0.0 (admitted), a positive wait (refused: seconds until a token), or
    an awaitable of either (the channel's block is empty and its lease is on the way).
    """

    def __init__(
        self,
        store: LeaseStore | None,
        *,
        timeout: float,
        floor: float,
        default_instances: int,
        clock: Clock = time.monotonic,
    ) -> None:
        self.store = store
        self.timeout = timeout
        self.floor = floor
        self.default_instances = default_instances
        self.clock = clock
        self.in_fallback = False
        self._blocks: dict[str, ChannelBlock] = {}

    def attach(self, store: LeaseStore | None) -> None:
        self.store = store

    def instances(self) -> int:
        known = self.store.instances() if self.store is not None else None
        return known if known is not None else self.default_instances

    def _block(self, channel: str, rate: float, burst: int) -> ChannelBlock:
        block = self._blocks.get(channel)
        if block is None or block.rate != rate or block.burst != burst:
            block = self._blocks[channel] = ChannelBlock(rate, burst)
        return block

    def take(self, channel: str, rate: float | None, burst: int | None) -> float | Awaitable[float]:
        if rate is None:
            return 0.0
        size = burst if burst is not None else max(1, math.ceil(rate))
        block = self._block(channel, rate, size)
        now = self.clock()
        if self.store is None:
            return self._fallback_take(block, now)
        if block.spend(now):
            if block.low():
                self._lease_ahead(channel, block)
            return 0.0
        if self.in_fallback and block.inflight is None:
            self._lease_ahead(channel, block)  # probe; this request is decided locally
            return self._fallback_take(block, now)
        if now < block.empty_until and block.inflight is None:
            return block.empty_until - now
        self._lease_ahead(channel, block)
        return self._after_lease(block)

    async def _after_lease(self, block: ChannelBlock) -> float:
        task = block.inflight
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), self.timeout)
            except TimeoutError:
                self._set_fallback(True)
        now = self.clock()
        if block.spend(now):
            return 0.0
        if self.in_fallback:
            return self._fallback_take(block, now)
        return max(block.empty_until - now, 1.0 / block.rate)

    def _lease_ahead(self, channel: str, block: ChannelBlock) -> None:
        if block.inflight is None and self.store is not None:
            block.inflight = asyncio.get_running_loop().create_task(
                self._lease(channel, block), name=f"paygate-rate-lease-{channel}"
            )

    async def _lease(self, channel: str, block: ChannelBlock) -> None:
        assert self.store is not None
        try:
            lease = await self.store.lease(channel, block.rate, block.burst, block.size)
        finally:
            block.inflight = None
        if lease is None:
            self._set_fallback(True)
            return
        self._set_fallback(False)
        granted, wait = lease
        now = self.clock()
        if granted > 0:
            block.add(granted, now)
            block.empty_until = 0.0
        else:
            block.empty_until = now + wait

    def _fallback_take(self, block: ChannelBlock, now: float) -> float:
        rate, burst = fallback_share(block.rate, block.burst, self.instances(), self.floor)
        bucket = block.fallback
        if bucket is None or bucket.rate != rate or bucket.burst != burst:
            bucket = block.fallback = TokenBucket(rate, burst, self.clock)
        if self.store is not None:
            metrics.rate_limit_fallback_decisions.inc()
        return bucket.take()

    def _set_fallback(self, on: bool) -> None:
        if on != self.in_fallback:
            self.in_fallback = on
            metrics.rate_limit_fallback.set(1 if on else 0)
            log.log(
                logging.WARNING if on else logging.INFO,
                "shared rate limits %s",
                f"unreachable: each channel admits this process's share of {self.instances()}"
                if on
                else "reachable again",
            )
