"""Redis over TLS with an ACL user and a client certificate (Debian's redis-server 7 on a
TLS port only, the default user switched off): the dedup cache and the shared rate limits
work through it, and each wrong setting costs only the cache, never a webhook."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.clients.rate_leases import RedisLeaseStore
from gateway.clients.redis import RedisCache
from gateway.config import Settings
from tests import stack as stack_module
from tests.conftest import make_settings, wait_for
from tests.estate.certs import Certificates
from tests.estate.servers import TlsRedis
from tests.webhooks import payment_doc, post_webhook


@pytest.fixture(scope="module")
async def redis_tls(estate_root: Path, certs: Certificates) -> AsyncIterator[TlsRedis]:
    server = TlsRedis(estate_root / "redis-tls", certs, client_certs="yes")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def tls_settings(server: TlsRedis, certs: Certificates, **env: str) -> Settings:
    environ = {
        "REDIS_URL": server.url(),
        "REDIS_TLS_CA_FILE": str(certs.ca),
        "REDIS_TLS_CERT_FILE": str(certs.client_cert),
        "REDIS_TLS_KEY_FILE": str(certs.client_key),
        "REDIS_TIMEOUT_MS": "1000",
    }
    environ.update(env)
    return Settings.from_env({k: v for k, v in environ.items() if v})


async def round_trip(settings: Settings) -> tuple[bool, list[bytes | None]]:
    cache = RedisCache(settings)
    try:
        await cache.exchange((), {"REF-TLS-1": b"known"})
        return await cache.ping(), await cache.exchange(["REF-TLS-1"], {})
    finally:
        await cache.close()


async def test_the_cache_and_the_rate_limits_work_over_tls_as_an_acl_user(
    redis_tls: TlsRedis, certs: Certificates
) -> None:
    settings = tls_settings(redis_tls, certs)
    assert await round_trip(settings) == (True, [b"known"])
    store = RedisLeaseStore(settings)
    try:
        assert await store.lease("tls-channel", 10.0, 5, 3) == (3, 0.0)
        await store.beat()
        assert store.instances() == 1
    finally:
        await store.close()


@pytest.mark.parametrize(
    "env",
    [
        {"REDIS_URL": "host:localhost"},  # a name the certificate does not carry
        {"REDIS_TLS_CA_FILE": "other_ca"},  # a CA that did not sign it
        {"REDIS_TLS_CERT_FILE": "", "REDIS_TLS_KEY_FILE": ""},  # no client certificate
        {"REDIS_URL": "password:wrong"},  # the ACL user's password
    ],
    ids=["host-not-in-certificate", "other-ca", "no-client-certificate", "wrong-password"],
)
async def test_a_wrong_setting_costs_the_cache_only(
    redis_tls: TlsRedis, certs: Certificates, env: dict[str, str]
) -> None:
    env = dict(env)
    url = env.get("REDIS_URL", "")
    if url.startswith("host:"):
        env["REDIS_URL"] = redis_tls.url(host=url.split(":")[1])
    elif url.startswith("password:"):
        env["REDIS_URL"] = redis_tls.url(password=url.split(":")[1])
    if env.get("REDIS_TLS_CA_FILE") == "other_ca":
        env["REDIS_TLS_CA_FILE"] = str(certs.other_ca)
    assert await round_trip(tls_settings(redis_tls, certs, **env)) == (False, [None])


async def test_a_webhook_fills_the_cache_over_tls(
    make_client: Callable[..., Awaitable[Any]],
    db: asyncpg.Pool,
    stack: stack_module.TestStack,
    redis_tls: TlsRedis,
    certs: Certificates,
) -> None:
    redis = tls_settings(redis_tls, certs)
    settings = make_settings(
        stack,
        redis_url=redis.redis_url,
        redis_tls_ca_file=redis.redis_tls_ca_file,
        redis_tls_cert_file=redis.redis_tls_cert_file,
        redis_tls_key_file=redis.redis_tls_key_file,
        redis_timeout_ms=1000,
    )
    client = await make_client(settings)
    doc = payment_doc()
    status, body, _ = await post_webhook(client, doc)
    assert status == 201

    cache = RedisCache(settings)
    try:

        async def cached() -> list[bytes | None]:
            values = await cache.exchange([doc["reference_number"]], {})
            return [v for v in values if v and body["payment_id"].encode() in v]

        await wait_for(cached, timeout=10)
    finally:
        await cache.close()
