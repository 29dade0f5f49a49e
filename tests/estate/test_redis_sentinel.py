"""Redis through Sentinel: one master, one replica, three sentinels. The cache and the
shared rate limits find the master through the sentinels; killing the master under
webhook traffic loses and doubles nothing, answers nothing but 200/201, and the same
gateway process (no restart) writes to the promoted replica afterwards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.clients.rate_leases import RedisLeaseStore
from gateway.clients.redis import KEY_PREFIX, RedisCache
from gateway.config import Settings
from tests.estate.servers import SentinelRedis, wait_until
from tests.faults.checker import check_database
from tests.faults.conftest import Faults
from tests.faults.harness import summarize


@pytest.fixture(scope="module")
async def sentinel(estate_root: Path) -> AsyncIterator[SentinelRedis]:
    group = SentinelRedis(estate_root / "redis-sentinel")
    await group.start()
    try:
        yield group
    finally:
        await group.stop()


def sentinel_env(group: SentinelRedis, password: str = SentinelRedis.PASSWORD) -> dict[str, str]:
    return {
        "REDIS_SENTINELS": group.addresses,
        "REDIS_SENTINEL_MASTER": group.MASTER,
        "REDIS_SENTINEL_PASSWORD": password,
        "REDIS_TIMEOUT_MS": "1000",
    }


async def test_cache_and_rate_limits_reach_the_master_the_sentinels_name(
    sentinel: SentinelRedis,
) -> None:
    settings = Settings.from_env(sentinel_env(sentinel))
    cache = RedisCache(settings)
    store = RedisLeaseStore(settings)
    try:
        await cache.exchange((), {"REF-SENTINEL-1": b"known"})
        assert await cache.exchange(["REF-SENTINEL-1"], {}) == [b"known"]
        assert await store.lease("sentinel-channel", 10.0, 5, 3) == (3, 0.0)
    finally:
        await cache.close()
        await store.close()
    master = aioredis.Redis(port=await sentinel.master_port())
    try:
        assert await master.exists(f"{KEY_PREFIX}{int(time.time() // settings.redis_ttl_seconds)}")
    finally:
        await master.aclose()


async def test_a_wrong_sentinel_password_costs_the_cache_only(sentinel: SentinelRedis) -> None:
    cache = RedisCache(Settings.from_env(sentinel_env(sentinel, password="wrong")))
    try:
        assert not await cache.ping()
        assert await cache.exchange(["REF-SENTINEL-1"], {}) == [None]
    finally:
        await cache.close()


async def test_killing_the_master_under_traffic_loses_and_doubles_nothing(
    faults: Faults, sentinel: SentinelRedis
) -> None:
    env = {k.lower(): v for k, v in sentinel_env(sentinel).items()}
    # REDIS_URL stays the session's Redis: with sentinels only its scheme, credentials and
    # database count (were its host used, the hints below would not reach the new master).
    env.update(redis_breaker_reset_seconds="0.5", redis_timeout_ms="200")
    gw = await faults.gateway("serve", **env)
    pid = gw.pid
    old_port = await sentinel.master_port()
    old = sentinel.master if sentinel.master.port == old_port else sentinel.replica
    driver = faults.driver(gw, rate=150, seconds=12, dup_ratio=0.3)
    load = asyncio.create_task(driver.run())
    try:
        await wait_until(lambda: _cached_on(old_port, driver.ledger.acked), 10, "a first hint")
        old.kill()
        await wait_until(lambda: _promoted(sentinel, old_port), 30, "the sentinels' failover")
        failed_over = time.monotonic()
    finally:
        ledger = await load

    stats = summarize(ledger)
    assert set(ledger.statuses) <= {200, 201}, f"the failover caused error responses: {stats}"
    assert ledger.statuses[200] > 0, "no duplicates were exercised"
    assert not ledger.unacked
    verdict = await check_database(faults.stack.database_url, ledger)
    assert verdict.ok, f"{verdict}\n{stats}"

    # No restart: the same process writes its hints to the promoted replica.
    assert gw.running and gw.pid == pid
    later = {
        ref: pid for ref, pid in ledger.acked.items() if ledger.first_sent[ref] > failed_over + 2
    }
    assert later, f"the load ended before the failover settled: {stats}"
    new_port = await sentinel.master_port()
    await wait_until(lambda: _cached_on(new_port, later, every=True), 10, "hints on the new master")


async def _promoted(group: SentinelRedis, old_port: int) -> bool:
    port = await group.master_port()
    if port == old_port:
        return False
    client = aioredis.Redis(port=port, decode_responses=True)
    try:
        return (await client.info("replication"))["role"] == "master"
    finally:
        await client.aclose()


async def _cached_on(port: int, acked: dict[str, str], *, every: bool = False) -> bool:
    """Whether the server on `port` holds the dedup hint of one (or every) acked reference."""
    refs = list(acked)[-200:]
    if not refs:
        return False
    client = aioredis.Redis(port=port)
    try:
        found = set()
        async for key in client.scan_iter(match=f"{KEY_PREFIX}*"):
            values = await client.hmget(key, refs)
            found |= {ref for ref, value in zip(refs, values, strict=True) if value}
    finally:
        await client.aclose()
    return found >= set(refs) if every else bool(found)
