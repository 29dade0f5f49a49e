"""`paygate`: the command line.

    paygate dev                  embedded Postgres/Redis/Kafka (for unset URLs) + server + workers
    paygate run                  server + workers against the configured URLs
    paygate serve                the HTTP server alone
    paygate worker NAME...       background workers alone (outbox, staging, partitions, reconcile)
    paygate migrate              apply pending migrations and create the monthly partitions

Settings come from the environment (see the README); a bad value stops start-up with
a message naming the variable.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from gateway.config import Settings
from gateway.errors import ConfigError

log = logging.getLogger("paygate")

# Set in the extra server processes WEB_CONCURRENCY starts (they run no workers).
CHILD_ENV = "PAYGATE_SERVER_CHILD"

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]
_COMMANDS: dict[str, Command] = {}
_EXTRA_PARSERS: list[Callable[[argparse._SubParsersAction[Any]], None]] = []


def command(name: str) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        _COMMANDS[name] = fn
        return fn

    return register


def _run_loop(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)


async def prepare_database(settings: Settings) -> None:
    """Migrate, then make sure the monthly partitions exist before traffic arrives."""
    from gateway.db.migrations import migrate

    applied = await migrate(settings.database_url)
    if applied:
        log.info("migrations applied: %s", ", ".join(applied))
    try:
        from workers.partitions import ensure_partitions
    except ImportError:
        return
    from gateway.db.pool import create_pool

    pool = await create_pool(settings, min_size=1, max_size=2)
    try:
        await ensure_partitions(pool, settings)
    finally:
        await pool.close()


def _require_urls(settings: Settings) -> None:
    if not settings.database_url:
        raise ConfigError("DATABASE_URL is not set (use `paygate dev` for the embedded stack)")


@command("migrate")
async def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    _require_urls(settings)
    await prepare_database(settings)
    return 0


@command("serve")
async def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from workers.cli.serve import serve

    _require_urls(settings)
    await serve(settings, with_workers=False)
    return 0


@command("run")
async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from workers.cli.serve import serve

    _require_urls(settings)
    await serve(settings, with_workers=True)
    return 0


@command("worker")
async def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from workers.cli.serve import available_workers, run_workers

    _require_urls(settings)
    unknown = [n for n in args.names if n not in available_workers()]
    if unknown:
        raise ConfigError(f"unknown worker {unknown[0]!r}; one of {', '.join(available_workers())}")
    await run_workers(settings, args.names)
    return 0


def _dev_secret(data_dir: Path) -> str:
    """`make run` must work with no configuration, and must still verify signatures:
    a random secret is made once and kept in the data dir (never printed)."""
    path = data_dir / "dev-webhook-secret"
    if not path.exists():
        import base64

        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


@command("dev")
async def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.clients.kafka import ensure_topic
    from workers.cli.devstack import EmbeddedKafka, EmbeddedPostgres, EmbeddedRedis, EmbeddedServer
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
        changes["webhook_secret"] = (_dev_secret(data),)
        log.info(
            "generic channel secret: %s (WEBHOOK_SECRET overrides it)", data / "dev-webhook-secret"
        )
    settings = settings.replace(**changes)
    try:
        await asyncio.gather(*(s.start() for s in servers))
        await prepare_database(settings)
        await ensure_topic(settings)
        await serve(settings, with_workers=True)
    finally:
        await asyncio.gather(*(s.stop() for s in servers), return_exceptions=True)
        log.info("embedded servers stopped")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paygate", description="Payment-webhook ingestion gateway"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dev", help="embedded stack + server + workers (make run)")
    sub.add_parser("run", help="server + workers against the configured URLs")
    sub.add_parser("serve", help="the HTTP server alone")
    w = sub.add_parser("worker", help="background workers alone")
    w.add_argument("names", nargs="+", metavar="NAME")
    sub.add_parser("migrate", help="apply migrations and create partitions")
    for extend in _EXTRA_PARSERS:
        extend(sub)
    return parser


def _load_extra_commands() -> None:
    """Commands contributed by their own modules (dlq, partitions, reconcile, token):
    imported explicitly, so a missing one fails loudly instead of vanishing."""
    from workers.cli import dlq as dlq_cli  # noqa: F401
    from workers.cli import partitions as partitions_cli  # noqa: F401
    from workers.cli import reconcile as reconcile_cli  # noqa: F401
    from workers.cli import token as token_cli  # noqa: F401


def _prepare_metrics_dir(settings: Settings) -> None:
    """Several server processes share one port: prometheus-client's multiprocess mode
    must be on before any metric is created, with a directory wiped by the first process."""
    if settings.web_concurrency <= 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return
    if os.environ.get(CHILD_ENV):
        return  # the parent prepared it
    default = str(Path(settings.data_dir).resolve() / "metrics")
    path = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", default))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()


def main(argv: list[str] | None = None) -> int:
    from gateway.observability import logs

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        if argv is not None and any(a in ("-h", "--help") for a in argv):
            settings = Settings()
        else:
            print(f"paygate: configuration error: {exc}", file=sys.stderr)
            return 2
    _prepare_metrics_dir(settings)
    _load_extra_commands()
    args = build_parser().parse_args(argv)
    logs.configure(settings.log_level)
    try:
        return _run_loop(_COMMANDS[args.command](args, settings))
    except ConfigError as exc:
        print(f"paygate: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
