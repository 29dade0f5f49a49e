"""The real servers the test session runs against: the embedded ones (started once per
session on free ports) or the ones named by DATABASE_URL / REDIS_URL /
KAFKA_BOOTSTRAP_SERVERS when those are set."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from workers.cli.devstack import EmbeddedKafka, EmbeddedPostgres, EmbeddedRedis, EmbeddedServer


@dataclass
class TestStack:
    database_url: str
    redis_url: str
    kafka_bootstrap: str
    root: Path | None = None
    servers: dict[str, EmbeddedServer] = field(default_factory=dict)

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
                servers[name] = kind(root / name)
        await asyncio.gather(*(s.start() for s in servers.values()))
        for name, server in servers.items():
            urls[name] = server.url  # type: ignore[attr-defined]
        return cls(urls["postgres"], urls["redis"], urls["kafka"], root, servers)

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.servers.values()), return_exceptions=True)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
