"""The asyncpg pool every component shares."""

from __future__ import annotations

import asyncpg
import orjson

from gateway.config import Settings
from gateway.db.server import check_supported, server_version


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
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=min_size if min_size is not None else settings.db_pool_min,
        max_size=max_size if max_size is not None else settings.db_pool_max,
        statement_cache_size=settings.db_statement_cache_size,
        init=_init_connection,
        # A dead server must cost seconds, not minutes: connects and commands are bounded.
        timeout=5,
        command_timeout=60,
        server_settings={"application_name": "paygate", "timezone": "UTC"},
    )
    assert pool is not None
    try:
        async with pool.acquire() as conn:
            check_supported(await server_version(conn), minimum_server_version)
    except BaseException:
        await pool.close()
        raise
    return pool
