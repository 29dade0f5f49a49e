"""What a stretch of WAL holds, read back with pg_walinspect: the records by kind, by the
relation they change, and how much of it is full-page images (the first change of a page
after a checkpoint copies the whole page). A build without contrib has no pg_walinspect:
the functions then answer nothing (empty lists, None) and print why."""

from __future__ import annotations

import asyncpg

_KINDS = """
SELECT "resource_manager/record_type" AS kind, count, record_size, fpi_size
FROM pg_get_wal_stats($1::pg_lsn, $2::pg_lsn, per_record => true)
WHERE count > 0 ORDER BY combined_size DESC LIMIT 12
"""
# A record is counted once, for its first block (pg_get_wal_block_info: PostgreSQL 16+).
_RELATIONS = """
SELECT coalesce(c.relname, b.relfilenode::text) AS relname, count(*) AS records,
       sum(b.record_length) AS bytes, sum(b.block_fpi_length) AS fpi
FROM pg_get_wal_block_info($1::pg_lsn, $2::pg_lsn) b
LEFT JOIN pg_class c ON c.relfilenode = b.relfilenode
WHERE b.block_id = 0
GROUP BY 1 ORDER BY bytes DESC LIMIT 20
"""
_FULL_PAGES = "SELECT sum(fpi_size) FROM pg_get_wal_stats($1::pg_lsn, $2::pg_lsn)"


async def _ready(conn: asyncpg.Connection) -> bool:
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
    except asyncpg.PostgresError as exc:
        print(f"no WAL breakdown: {exc}")
        return False
    return True


async def breakdown(
    conn: asyncpg.Connection, start: object, end: object
) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    """The records by kind (kind, count, record_size, fpi_size) and by relation (relname,
    records, bytes, fpi), largest first."""
    if not await _ready(conn):
        return [], []
    kinds = await conn.fetch(_KINDS, start, end)
    try:
        return kinds, await conn.fetch(_RELATIONS, start, end)
    except asyncpg.PostgresError as exc:  # before PostgreSQL 16
        print(f"no WAL by relation: {exc}")
        return kinds, []


async def full_page_bytes(conn: asyncpg.Connection, start: object, end: object) -> int | None:
    """Bytes of full-page images between two LSNs."""
    if not await _ready(conn):
        return None
    return int(await conn.fetchval(_FULL_PAGES, start, end) or 0)
