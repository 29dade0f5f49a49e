"""The private embedded stack every hot-path bench starts: Postgres (migrated, partitions
created), Redis and, if asked, the broker; a fresh webhook secret; the environment a
`paygate serve` or a bench server needs to use them. Gone (data included) on exit."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen import build_requests
from gateway.config import Settings
from gateway.db.migrations import migrate
from gateway.db.pool import create_pool
from gateway.ingest.signatures import decode_secret
from workers.cli.devstack import EmbeddedKafka, EmbeddedPostgres, EmbeddedRedis


@dataclass
class BenchStack:
    root: Path
    secret: str  # the generic channel's whsec_ secret
    key: bytes  # the same, decoded, for signing requests
    pg: EmbeddedPostgres
    redis: EmbeddedRedis
    kafka: EmbeddedKafka | None

    @property
    def kafka_url(self) -> str:
        # No broker: empty, which servers take as "none" (an address where nothing answers
        # stops `paygate serve` at start-up).
        return self.kafka.url if self.kafka is not None else ""

    def settings(self) -> Settings:
        return Settings.from_env(
            {},
            database_url=self.pg.url,
            redis_url=self.redis.url,
            kafka_bootstrap_servers=self.kafka_url,
            webhook_secret=(self.secret,),
            log_level="WARNING",
            enable_outbox_relay=False,
            enable_staging_processor=False,
            enable_partition_maintenance=False,
            enable_status_poller=False,
        )

    def server_env(self, **extra: str) -> dict[str, str]:
        """Environment for a server process: this stack, the hot path alone (no workers)."""
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.pg.url, REDIS_URL=self.redis.url,
            KAFKA_BOOTSTRAP_SERVERS=self.kafka_url, WEBHOOK_SECRET=self.secret,
            LOG_LEVEL="WARNING", ENABLE_OUTBOX_RELAY="false", ENABLE_STAGING_PROCESSOR="false",
            ENABLE_PARTITION_MAINTENANCE="false", ENABLE_STATUS_POLLER="false",
            PAYGATE_DATA_DIR=str(self.root),
        )  # fmt: skip
        env.update(extra)
        return env


class _TunedPostgres(EmbeddedPostgres):
    """The embedded server with extra `-c name=value` settings (a preload library, say)."""

    def __init__(self, data_dir: Path, settings: tuple[str, ...]) -> None:
        super().__init__(data_dir)
        self.settings = settings

    def command(self) -> list[str]:
        extra = [arg for setting in self.settings for arg in ("-c", setting)]
        return [*super().command(), *extra]


@asynccontextmanager
async def bench_stack(
    prefix: str,
    *,
    kafka: bool = False,
    parent: Path | None = None,
    pg_settings: tuple[str, ...] = (),
) -> AsyncIterator[BenchStack]:
    """`parent`: where the stack's folder goes (a temp dir by default; a bench that fills
    gigabytes keeps it on the disk it checks); `pg_settings`: extra server settings."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    root.chmod(0o755)  # the embedded Postgres may run as its own user
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    stack = BenchStack(
        root,
        secret,
        decode_secret("standard", secret),
        _TunedPostgres(root / "pg", pg_settings),
        EmbeddedRedis(root / "redis"),
        EmbeddedKafka(root / "kafka") if kafka else None,
    )
    servers = [s for s in (stack.pg, stack.redis, stack.kafka) if s is not None]
    try:
        await asyncio.gather(*(s.start() for s in servers))
        settings = stack.settings()
        await migrate(stack.pg.url)
        from workers.partitions import ensure_partitions

        pool = await create_pool(settings, min_size=1, max_size=2)
        await ensure_partitions(pool, settings)
        await pool.close()
        if kafka:
            from gateway.clients.kafka import ensure_topic

            await ensure_topic(settings)
        yield stack
    finally:
        await asyncio.gather(*(s.stop() for s in servers), return_exceptions=True)
        shutil.rmtree(root, ignore_errors=True)


def mode_requests(host: str, mode: str, count: int, key: bytes) -> tuple[list[bytes], list[bytes]]:
    """(seed, requests) for a run: `dup` repeats 20,000 seed payments (to be recorded
    first), `new` and `bare` send `count` new ones."""
    if mode == "dup":
        seed = build_requests(host, 20_000, key, dup_ratio=0)
        return seed, build_requests(host, count, key, dup_ratio=0, seed_refs=seed)
    return [], build_requests(host, count, key, dup_ratio=0)
