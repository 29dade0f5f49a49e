"""Postgres over verified TLS: Debian's PostgreSQL 15 with `ssl=on` and the test CA, every
client required to use TLS (and `paygate` to present a client certificate). DATABASE_URL
with `sslmode=verify-full&sslrootcert=…` works for migrations, the pool, the app, a
multi-host failover URL and the CLI; a host name the certificate does not carry is
refused with a message that says so."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.db.migrations import migrate
from gateway.db.pool import create_pool
from gateway.errors import ConfigError
from tests import stack as stack_module
from tests.conftest import make_settings
from tests.estate.certs import Certificates
from tests.estate.servers import TlsPostgres
from tests.webhooks import payment_doc, post_webhook
from workers.cli.devstack import free_port


@pytest.fixture(scope="module")
async def postgres(estate_root: Path, certs: Certificates) -> AsyncIterator[TlsPostgres]:
    server = TlsPostgres(estate_root / "postgres-tls", certs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def verified(
    server: TlsPostgres, certs: Certificates, host: str = "127.0.0.1", **extra: str
) -> str:
    return server.dsn(host, sslmode="verify-full", sslrootcert=str(certs.ca), **extra)


async def cli(dsn: str, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "PAYGATE_"))}
    env.update(DATABASE_URL=dsn, LOG_LEVEL="WARNING", ADMIN_JWT_SECRET="x" * 32)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, (out + err).decode()


async def test_migrations_pool_and_the_cli_over_verify_full(
    postgres: TlsPostgres, certs: Certificates
) -> None:
    dsn = verified(postgres, certs)
    await migrate(dsn)
    code, output = await cli(dsn, "migrate")
    assert code == 0, output
    code, output = await cli(dsn, "dlq", "list")
    assert code == 0, output
    pool = await create_pool(make_settings_for(dsn), min_size=1, max_size=2)
    try:
        assert await pool.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    finally:
        await pool.close()


async def test_a_host_the_certificate_does_not_name_is_refused_saying_so(
    postgres: TlsPostgres, certs: Certificates
) -> None:
    dsn = verified(postgres, certs, host="localhost")
    with pytest.raises(ConfigError, match=r"certificate was refused.*mismatch.*'localhost'"):
        await migrate(dsn)
    with pytest.raises(ConfigError, match="certificate was refused"):
        await create_pool(make_settings_for(dsn), min_size=1, max_size=1)
    code, output = await cli(dsn, "migrate")
    assert code == 2
    assert "configuration error: DATABASE_URL: the server's TLS certificate was refused" in output
    assert "Traceback" not in output


async def test_a_ca_that_did_not_sign_the_certificate_is_refused(
    postgres: TlsPostgres, certs: Certificates
) -> None:
    dsn = postgres.dsn(sslmode="verify-full", sslrootcert=str(certs.other_ca))
    with pytest.raises(ConfigError, match="certificate was refused"):
        await migrate(dsn)


async def test_a_client_certificate_when_the_server_requires_one(
    postgres: TlsPostgres, certs: Certificates
) -> None:
    with_cert = verified(
        postgres, certs, user="paygate",
        sslcert=str(certs.client_cert), sslkey=str(certs.client_key),
    )  # fmt: skip
    pool = await create_pool(make_settings_for(with_cert), min_size=1, max_size=1)
    try:
        assert await pool.fetchval("SELECT current_user") == "paygate"
    finally:
        await pool.close()
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="certificate"):
        await create_pool(
            make_settings_for(verified(postgres, certs, user="paygate")), min_size=1, max_size=1
        )


async def test_a_failover_url_skips_a_dead_host_and_verifies_the_live_one(
    postgres: TlsPostgres, certs: Certificates
) -> None:
    dead = free_port()
    dsn = (
        f"postgresql://postgres@127.0.0.1:{dead},127.0.0.1:{postgres.port}/{postgres.database}"
        f"?target_session_attrs=read-write&sslmode=verify-full&sslrootcert={certs.ca}"
    )
    pool = await create_pool(make_settings_for(dsn), min_size=1, max_size=1)
    try:
        assert await pool.fetchval("SELECT inet_server_port()") == postgres.port
    finally:
        await pool.close()
    wrong = dsn.replace(f"127.0.0.1:{postgres.port}", f"localhost:{postgres.port}")
    with pytest.raises(ConfigError, match="certificate was refused"):
        await create_pool(make_settings_for(wrong), min_size=1, max_size=1)


async def test_a_webhook_is_recorded_over_verify_full(
    postgres: TlsPostgres,
    certs: Certificates,
    stack: stack_module.TestStack,
    make_client: Callable[..., Awaitable[Any]],
) -> None:
    dsn = verified(postgres, certs)
    await migrate(dsn)
    client = await make_client(make_settings(stack, database_url=dsn))
    doc = payment_doc()
    status, body, _ = await post_webhook(client, doc)
    assert status == 201
    conn = await asyncpg.connect(dsn)
    try:
        recorded = await conn.fetchval(
            "SELECT id::text FROM payment_service.payments WHERE reference_number = $1",
            doc["reference_number"],
        )
    finally:
        await conn.close()
    assert recorded == body["payment_id"]


def make_settings_for(dsn: str) -> Any:
    from gateway.config import Settings

    return Settings.from_env({"DATABASE_URL": dsn})
