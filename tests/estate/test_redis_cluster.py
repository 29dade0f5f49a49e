"""A three-node Redis Cluster (REDIS_CLUSTER=true): the dedup cache's buckets and the
rate-limit buckets land on whichever node owns their slot, and every script runs on one
node (each touches only the key it is given)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from gateway.clients.rate_leases import INSTANCES_KEY, RedisLeaseStore, bucket_key
from gateway.clients.redis import RedisCache
from gateway.config import Settings
from tests import stack as stack_module
from tests.conftest import make_settings, wait_for
from tests.estate.servers import ClusterRedis
from tests.webhooks import payment_doc, post_webhook


@pytest.fixture(scope="module")
async def cluster(estate_root: Path) -> AsyncIterator[ClusterRedis]:
    server = ClusterRedis(estate_root / "redis-cluster")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def cluster_settings(cluster: ClusterRedis, **env: str) -> Settings:
    return Settings.from_env(
        {"REDIS_URL": cluster.url, "REDIS_CLUSTER": "true", "REDIS_TIMEOUT_MS": "1000", **env}
    )


def node_of(key: str) -> int:
    slot = key_slot(key.encode())
    return 0 if slot <= 5460 else 1 if slot <= 10922 else 2


async def test_rate_limit_buckets_on_every_node_lease_atomically(cluster: ClusterRedis) -> None:
    channels: dict[int, str] = {}
    n = 0
    while len(channels) < 3:  # one channel whose bucket lives on each node
        channels.setdefault(node_of(bucket_key(f"ch-{n}")), f"ch-{n}")
        n += 1
    store = RedisLeaseStore(cluster_settings(cluster))
    try:
        for channel in channels.values():
            assert await store.lease(channel, 10.0, 4, 3) == (3, 0.0)
            granted, wait = await store.lease(channel, 10.0, 4, 3)
            assert granted == 1  # the bucket's state persisted between two scripts
            granted, wait = await store.lease(channel, 10.0, 4, 3)
            assert granted == 0 and wait > 0
        await store.beat()
        assert store.instances() == 1
    finally:
        await store.close()
    # A plain client on the node that owns the slot sees the bucket: it is not elsewhere.
    for node, channel in channels.items():
        direct = aioredis.Redis(port=cluster.nodes[node].port)
        try:
            assert await direct.exists(bucket_key(channel)) == 1
        finally:
            await direct.aclose()
    assert node_of(INSTANCES_KEY) in (0, 1, 2)


async def test_the_dedup_cache_reads_back_through_the_cluster(cluster: ClusterRedis) -> None:
    cache = RedisCache(cluster_settings(cluster))
    try:
        assert await cache.ping()
        refs = [f"REF-CLUSTER-{i}" for i in range(50)]
        await cache.exchange((), {ref: ref.encode() for ref in refs})
        assert await cache.exchange(refs, {}) == [ref.encode() for ref in refs]
        assert await cache.exchange(["REF-NEVER-STORED"], {}) == [None]
    finally:
        await cache.close()


async def test_a_node_that_is_not_a_cluster_member_is_refused(estate_root: Path) -> None:
    """The setting is checked by a real server: REDIS_CLUSTER against a plain Redis fails
    (the cache reports unavailable), and a Cluster without REDIS_CLUSTER answers MOVED."""
    from tests.estate.servers import RedisServer

    plain = RedisServer(estate_root / "redis-plain")
    await plain.start()
    try:
        cache = RedisCache(cluster_settings_for(f"redis://127.0.0.1:{plain.port}/0"))
        try:
            assert not await cache.ping()
        finally:
            await cache.close()
    finally:
        await plain.stop()


def cluster_settings_for(url: str) -> Settings:
    return Settings.from_env({"REDIS_URL": url, "REDIS_CLUSTER": "true", "REDIS_TIMEOUT_MS": "500"})


async def test_without_redis_cluster_a_cluster_node_answers_moved(cluster: ClusterRedis) -> None:
    refs = [f"REF-MOVED-{i}" for i in range(20)]
    clustered = RedisCache(cluster_settings(cluster))
    current, _ = clustered._buckets()
    elsewhere = cluster.nodes[(node_of(current) + 1) % 3]  # a node that does not own it
    plain = RedisCache(
        Settings.from_env({"REDIS_URL": f"redis://127.0.0.1:{elsewhere.port}/0",
                           "REDIS_TIMEOUT_MS": "500"})
    )  # fmt: skip
    try:
        await clustered.exchange((), {ref: b"x" for ref in refs})
        assert await plain.exchange(refs, {}) == [None] * len(refs)  # MOVED: a failure
        assert await clustered.exchange(refs, {}) == [b"x"] * len(refs)
    finally:
        await plain.close()
        await clustered.close()


async def test_a_webhook_goes_through_the_cluster(
    make_client: Callable[..., Awaitable[Any]],
    db: asyncpg.Pool,
    stack: stack_module.TestStack,
    cluster: ClusterRedis,
) -> None:
    settings = make_settings(
        stack, redis_url=cluster.url, redis_cluster=True, redis_timeout_ms=1000
    )
    client = await make_client(settings)
    doc = payment_doc()
    status, body, _ = await post_webhook(client, doc)
    assert status == 201
    cache = RedisCache(settings)
    try:

        async def cached() -> bool:
            [value] = await cache.exchange([doc["reference_number"]], {})
            return value is not None and body["payment_id"].encode() in value

        await wait_for(cached, timeout=10)
    finally:
        await cache.close()
