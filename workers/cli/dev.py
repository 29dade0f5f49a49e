"""`paygate dev` (`make run`): embedded Postgres, Redis and Kafka for every URL left
unset, migrate, then the server and every worker. Once it serves, it prints where each
door is and records itself in the data dir so the other commands find it (discovery)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from gateway.config import Settings
from workers.cli import discovery
from workers.cli.command import Command

log = logging.getLogger("paygate")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.clients.kafka import ensure_topic
    from workers.cli.devstack import EmbeddedKafka, EmbeddedPostgres, EmbeddedRedis, EmbeddedServer
    from workers.cli.migrate import prepare_database
    from workers.cli.reachability import require_urls
    from workers.cli.serve import serve

    await require_urls(settings)  # the URLs given must answer before anything starts
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
    # Kept in the data dir (never printed): signatures are verified and the ops API and
    # console open with no configuration; a variable given still wins.
    webhook_secret_file = None
    if not settings.webhook_secret:
        changes["webhook_secret"] = (discovery.dev_webhook_secret(data),)
        webhook_secret_file = data / discovery.WEBHOOK_SECRET_FILE
    if not settings.admin_jwt_secret:
        changes["admin_jwt_secret"] = discovery.dev_admin_secret(data)
    embedded = {k: v for k, v in changes.items() if k.endswith(("_url", "_servers"))}
    admin_secret_kept = not settings.admin_jwt_secret
    settings = settings.replace(**changes)

    def ready() -> None:
        """Serving: tell the other commands where the stack is, and the user."""
        url = discovery.base_url(settings)
        discovery.record(data, discovery.DevStack(os.getpid(), url, **embedded))
        print(
            discovery.banner(
                settings,
                webhook_secret_file=webhook_secret_file,
                admin_secret_kept=admin_secret_kept,
            ),
            flush=True,
        )

    try:
        await asyncio.gather(*(s.start() for s in servers))
        await prepare_database(settings)
        await ensure_topic(settings)
        await serve(settings, with_workers=True, ready=ready)
    finally:
        discovery.forget(data, os.getpid())
        await asyncio.gather(*(s.stop() for s in servers), return_exceptions=True)
        log.info("embedded servers stopped")
    return 0


COMMAND = Command("dev", "embedded stack + server + workers (make run)", run)
