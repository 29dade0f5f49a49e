"""`paygate dev` (`make run`): embedded Postgres, Redis and Kafka for every URL left
unset, migrate, then the server and every worker."""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import secrets
from pathlib import Path
from typing import Any

from gateway.config import Settings
from workers.cli.command import Command

log = logging.getLogger("paygate")


def dev_secret(data_dir: Path) -> str:
    """`make run` must work with no configuration, and must still verify signatures:
    a random secret is made once and kept in the data dir (never printed)."""
    path = data_dir / "dev-webhook-secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


async def run(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.clients.kafka import ensure_topic
    from workers.cli.devstack import EmbeddedKafka, EmbeddedPostgres, EmbeddedRedis, EmbeddedServer
    from workers.cli.migrate import prepare_database
    from workers.cli.serve import serve

    data = Path(settings.data_dir).resolve()
    servers: list[EmbeddedServer] = []
    changes: dict[str, Any] = {}
    if not settings.database_url:
        pg = EmbeddedPostgres(data / "postgres", settings.embedded_pg_port)
        servers.append(pg)
        changes["database_url"] = pg.url
    if not settings.redis_url:
        rd = EmbeddedRedis(data / "redis", settings.embedded_redis_port)
        servers.append(rd)
        changes["redis_url"] = rd.url
    if not settings.kafka_bootstrap_servers:
        kf = EmbeddedKafka(data / "kafka", settings.embedded_kafka_port)
        servers.append(kf)
        changes["kafka_bootstrap_servers"] = kf.url
    if not settings.webhook_secret:
        changes["webhook_secret"] = (dev_secret(data),)
        log.info(
            "generic channel secret: %s (WEBHOOK_SECRET overrides it)", data / "dev-webhook-secret"
        )
    settings = settings.replace(**changes)
    try:
        await asyncio.gather(*(s.start() for s in servers))
        for server in servers:  # a killed postmaster or broker comes back on its own
            server.supervise()
        await prepare_database(settings)
        await ensure_topic(settings)
        await serve(settings, with_workers=True)
    finally:
        await asyncio.gather(*(s.stop() for s in servers), return_exceptions=True)
        log.info("embedded servers stopped")
    return 0


COMMAND = Command("dev", "embedded stack + server + workers (make run)", run)
