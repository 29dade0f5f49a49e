"""The shared buckets' script and the instance heartbeat against the session's real Redis
(6.2 embedded, 7 on the debian server set)."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis

from gateway.clients.rate_leases import (
    INSTANCES_KEY,
    RedisLeaseStore,
    bucket_key,
    lease_store,
)
from tests import stack as test_stack
from tests.conftest import make_settings, wait_for
from workers.cli.devstack import free_port


async def test_leases_hand_out_the_burst_in_blocks_then_nothing_with_the_wait(
    db: asyncpg.Pool, stack: test_stack.TestStack
) -> None:
    store = RedisLeaseStore(make_settings(stack))
    try:
        grants = [await store.lease("ch", 2.0, 10, 4) for _ in range(4)]
        assert [g[0] for g in grants if g] == [4, 4, 2, 0]
        last = grants[-1]
        assert last is not None and 0 < last[1] <= 0.5  # a token back within 1/rate
        r = aioredis.from_url(stack.redis_url)
        try:
            ttl = await r.pttl(bucket_key("ch"))
        finally:
            await r.aclose()
        assert 0 < ttl <= 10_000, "an idle bucket must expire"
    finally:
        await store.close()


async def test_the_bucket_refills_by_redis_time(
    db: asyncpg.Pool, stack: test_stack.TestStack
) -> None:
    store = RedisLeaseStore(make_settings(stack))
    try:
        first = await store.lease("fast", 200.0, 5, 5)
        assert first is not None and first[0] == 5

        async def refilled() -> bool:
            got = await store.lease("fast", 200.0, 5, 1)
            return got is not None and got[0] == 1

        await wait_for(refilled, timeout=5)
    finally:
        await store.close()


async def test_a_flushed_script_cache_is_reloaded(
    db: asyncpg.Pool, stack: test_stack.TestStack
) -> None:
    store = RedisLeaseStore(make_settings(stack))
    try:
        assert await store.lease("x", 10.0, 3, 1) == (1, 0.0)
        r = aioredis.from_url(stack.redis_url)
        try:
            await r.script_flush()
        finally:
            await r.aclose()
        assert await store.lease("x", 10.0, 3, 1) == (1, 0.0)  # NOSCRIPT -> loaded again
    finally:
        await store.close()


async def test_heartbeats_count_the_live_instances_and_a_closed_one_leaves(
    db: asyncpg.Pool, stack: test_stack.TestStack
) -> None:
    settings = make_settings(stack)
    async with lease_store(settings) as a, lease_store(settings) as b:
        await a.beat()
        assert a.instances() == 2
        assert b.instances() in (1, 2)
    r = aioredis.from_url(stack.redis_url)
    try:
        assert await r.zcard(INSTANCES_KEY) == 0
    finally:
        await r.aclose()


async def test_an_unreachable_redis_answers_none_and_opens_the_circuit(
    db: asyncpg.Pool, stack: test_stack.TestStack
) -> None:
    store = RedisLeaseStore(
        make_settings(stack, redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout_ms=50)
    )
    try:
        for _ in range(3):
            assert await store.lease("ch", 10.0, 10, 1) is None
        assert store.breaker.is_open
        await store.beat()
        assert store.instances() is None
    finally:
        await store.close()
