"""Forward-only SQL migrations from `sql/NNN_name.sql`.

Each file runs in its own transaction and is recorded in schema_migrations with its
checksum. A session advisory lock serialises concurrent runners (two pods starting
at once), and a runner that finds a file already applied skips it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from gateway.db.server import certificate_check, check_supported, server_version

log = logging.getLogger(__name__)

MIGRATION_LOCK_KEY = 0x7061_7967_6D69  # "paygmi": fixed, so every instance contends on one lock
_NAME = re.compile(r"^(\d{3,})_[\w.-]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def sql_dir() -> Path:
    """PAYGATE_SQL_DIR, else the `sql/` folder of the checkout this module runs from (found
    by looking upwards for it, so moving this module does not lose the migrations), else
    `./sql`."""
    configured = os.environ.get("PAYGATE_SQL_DIR")
    if configured:
        return Path(configured)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "sql"
        if (candidate / "001_schema.sql").is_file():
            return candidate
    return Path.cwd() / "sql"


def discover(directory: Path | None = None) -> list[Migration]:
    directory = directory or sql_dir()
    found = []
    for path in sorted(directory.glob("*.sql")):
        if _NAME.match(path.name):
            found.append(Migration(path.stem, path, path.read_text()))
    versions = [m.version.split("_", 1)[0] for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a number in {directory}")
    return found


async def migrate(
    dsn_or_conn: str | asyncpg.Connection,
    directory: Path | None = None,
    *,
    minimum_server_version: int | None = None,
) -> list[str]:
    """Apply every migration not yet recorded; return the versions applied now. A server
    older than paygate supports is refused first (UnsupportedServer)."""
    if isinstance(dsn_or_conn, str):
        with certificate_check():
            conn = await asyncpg.connect(dsn_or_conn)
    else:
        conn = dsn_or_conn
    try:
        check_supported(await server_version(conn), minimum_server_version)
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            return await _apply_pending(conn, discover(directory))
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        if isinstance(dsn_or_conn, str):
            await conn.close()


async def _apply_pending(conn: asyncpg.Connection, migrations: list[Migration]) -> list[str]:
    await conn.execute(
        """
        CREATE SCHEMA IF NOT EXISTS payment_service;
        CREATE TABLE IF NOT EXISTS payment_service.schema_migrations (
            version    TEXT PRIMARY KEY,
            checksum   TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        """
    )
    rows = await conn.fetch("SELECT version, checksum FROM payment_service.schema_migrations")
    applied = {r["version"]: r["checksum"] for r in rows}
    done = []
    for m in migrations:
        if m.version in applied:
            if applied[m.version] != m.checksum:
                log.warning("migration %s changed after it was applied; not re-run", m.version)
            continue
        async with conn.transaction():
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO payment_service.schema_migrations (version, checksum) VALUES ($1, $2)",
                m.version,
                m.checksum,
            )
        log.info("applied migration %s", m.version)
        done.append(m.version)
    return done
