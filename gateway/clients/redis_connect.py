"""How paygate reaches Redis: one server (`redis://`, `rediss://` over TLS), a master found
through Sentinel (REDIS_SENTINELS + REDIS_SENTINEL_MASTER), or a Cluster (REDIS_CLUSTER).

Every client the gateway opens is built here, so the dedup cache and the shared rate
limits (and anything added later) speak the same TLS, ACL user and topology, with every
wait bounded by REDIS_TIMEOUT_MS: Redis only ever saves work, it must never stall a
request.

- TLS: a `rediss://` URL verifies the server's certificate and host name (the system's CAs
  unless REDIS_TLS_CA_FILE names others) and presents REDIS_TLS_CERT_FILE/KEY_FILE when
  set. An ACL user is the URL's user name: `rediss://paygate:secret@host:6380/0`.
- Sentinel: the URL gives the scheme, credentials and database (its host is not used);
  the sentinels give the master's address, asked again whenever a connection is made, so
  a failover costs the connections to the old master and nothing else. Sentinels are
  reached with the same TLS, and REDIS_SENTINEL_PASSWORD when they require one.
- Cluster: the URL names any node; the client learns the slots and follows MOVED/ASK.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, BlockingConnectionPool, parse_url
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import RedisClusterException, RedisError

from gateway.config import Settings
from gateway.errors import ConfigError

RedisClient = aioredis.Redis | RedisCluster

# What a Redis call may raise when Redis is down, slow, failing over or misconfigured: the
# caller counts it and goes on without Redis. (A Cluster's own errors, such as "cluster
# mode is not enabled" or an uncovered slot, are not RedisErrors.)
REDIS_FAILURES: tuple[type[BaseException], ...] = (
    RedisError, RedisClusterException, OSError, TimeoutError,
)  # fmt: skip


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's master-following pool that waits (bounded) for a free connection instead
    of raising MaxConnectionsError, as the single-server pool does."""


def uses_tls(settings: Settings) -> bool:
    return settings.redis_url.startswith("rediss://")


def tls_options(settings: Settings) -> dict[str, Any]:
    """redis-py's TLS keyword arguments: certificate and host name always verified."""
    if not uses_tls(settings):
        return {}
    return {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": settings.redis_tls_ca_file or None,
        "ssl_certfile": settings.redis_tls_cert_file or None,
        "ssl_keyfile": settings.redis_tls_key_file or None,
    }


def _timeouts(settings: Settings) -> dict[str, float]:
    timeout = settings.redis_timeout_ms / 1000
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout}


def redis_client(settings: Settings, max_connections: int) -> RedisClient:
    """A client for the configured topology whose every wait (a free connection, the
    connect, a reply) is bounded by REDIS_TIMEOUT_MS."""
    timeout = settings.redis_timeout_ms / 1000
    if settings.redis_cluster:
        if parse_url(settings.redis_url).get("db", 0):
            raise ConfigError("REDIS_URL: a Redis Cluster has only database 0")
        return RedisCluster.from_url(
            settings.redis_url,
            max_connections=max(max_connections, 8),  # per node
            **_timeouts(settings),
            **tls_options(settings),
        )
    if settings.redis_sentinels:
        return _sentinel_master(settings, max_connections)
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections,
        timeout=timeout,
        **_timeouts(settings),
        **tls_options(settings),
    )
    return aioredis.Redis(connection_pool=pool)


def _sentinel_master(settings: Settings, max_connections: int) -> aioredis.Redis:
    link: dict[str, Any] = dict(parse_url(settings.redis_url))
    for unused in ("host", "port", "path", "connection_class"):
        link.pop(unused, None)
    tls = uses_tls(settings)
    sentinel_options: dict[str, Any] = {**_timeouts(settings), **tls_options(settings)}
    if tls:
        sentinel_options["ssl"] = True
    if settings.redis_sentinel_password:
        sentinel_options["password"] = settings.redis_sentinel_password
    sentinel = Sentinel(
        list(settings.redis_sentinels),
        sentinel_kwargs=sentinel_options,
        **(link | _timeouts(settings) | tls_options(settings)),
    )
    return sentinel.master_for(
        settings.redis_sentinel_master,
        connection_pool_class=BlockingSentinelPool,
        ssl=tls,
        max_connections=max_connections,
        timeout=settings.redis_timeout_ms / 1000,
    )


def link_factory(client: RedisClient) -> Callable[[], AbstractConnection] | None:
    """New dedicated connections like the client's own (same server or same Sentinel-found
    master, TLS, user, timeouts), for the cache's packed exchange; None for a Cluster,
    whose commands must be routed by slot."""
    if isinstance(client, RedisCluster):
        return None
    return client.connection_pool.make_connection


async def close_client(client: RedisClient) -> None:
    await client.aclose()
    if isinstance(client, aioredis.Redis):
        await client.connection_pool.disconnect()
