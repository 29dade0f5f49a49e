"""The asyncpg pool every component shares (a `PrimaryPool`: see gateway.db.primary)."""

from __future__ import annotations

import asyncpg
import orjson

from gateway.config import Settings
from gateway.db.primary import PrimaryPool
from gateway.db.server import certificate_check, check_supported, server_version


async def _init_connection(conn: asyncpg.Connection) -> None:
    # JSONB in and out through orjson: faster than json, and Decimal-free payloads only.
    for name in ("jsonb", "json"):
        await conn.set_type_codec(
            name,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


async def create_pool(
    settings: Settings,
    *,
    min_size: int | None = None,
    max_size: int | None = None,
    minimum_server_version: int | None = None,
) -> asyncpg.Pool:
    """The pool, after checking the server is one paygate supports (UnsupportedServer,
    a ConfigError naming both versions, otherwise)."""
    # What asyncpg.create_pool does, with the pool class that drops connections to a
    # server that went away or stopped taking writes (create_pool takes no class).
    pool = PrimaryPool(
        settings.database_url,
        min_size=min_size if min_size is not None else settings.db_pool_min,
        max_size=max_size if max_size is not None else settings.db_pool_max,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        init=_init_connection,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        statement_cache_size=settings.db_statement_cache_size,
        # A dead server must cost seconds, not minutes: connects and commands are bounded.
        timeout=5,
        command_timeout=60,
        server_settings={"application_name": "paygate", "timezone": "UTC"},
    )
    with certificate_check():
        await pool
    try:
        async with pool.acquire() as conn:
            check_supported(await server_version(conn), minimum_server_version)
    except BaseException:
        await pool.close()
        raise
    return pool
