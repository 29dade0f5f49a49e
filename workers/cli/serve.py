"""`paygate serve` and `paygate run`: the HTTP server processes, alone or with the
background workers in a process of their own (workers/cli/supervisor.py).

The CLI lives on the workers side because it composes both halves; `gateway/`
never imports `workers/`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import ssl
from collections.abc import Callable
from contextlib import suppress

from aiohttp import web

from gateway.config import Settings
from gateway.notify import WAKEUP_SOCKET_ENV
from gateway.observability.gc_pauses import observe_gc_pauses
from gateway.security.slow_clients import server_kwargs
from workers.cli.command import CHILD_ENV, Command
from workers.cli.reachability import require_urls
from workers.cli.supervisor import Child, stop_all

log = logging.getLogger(__name__)


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.tls_cert_file:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return ctx


async def wait_for_stop_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


# Measured on the webhook path: CPython's default collector (a gen-0 pass every 700
# allocations, promoting into ever-larger scans) cost about a third of the server's CPU
# at a few thousand requests per second. Nothing on the request path makes reference
# cycles worth chasing often; the thresholds keep the collector for leaks, not per batch.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """After start-up (modules, pools, the warmed cache): freeze what exists so no
    collection scans it again, and collect far less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    observe_gc_pauses()


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of a child process: ours, marked as a child (it starts no children
    and leaves the metrics directory alone), with the URLs `paygate dev` chose."""
    env = dict(os.environ, **{CHILD_ENV: "1"})
    inherited = {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "WEBHOOK_SECRET": " ".join(settings.webhook_secret),
        "ADMIN_JWT_SECRET": settings.admin_jwt_secret,
        "PORT": str(settings.port),
    }
    env.update({k: v for k, v in inherited.items() if v})
    return env


def enabled_workers(settings: Settings) -> list[str]:
    from workers.registry import WORKERS

    return [name for name, spec in WORKERS.items() if getattr(settings, spec.switch)]


def _children(settings: Settings, *, with_workers: bool) -> tuple[list[Child], list[Child]]:
    """(servers, workers): server_processes - 1 extra `paygate serve` processes on the same
    port (SO_REUSEPORT: the kernel spreads connections), and with `with_workers` one
    `paygate worker ...` process for every enabled worker: the relay never shares an
    event loop with a process that answers webhooks."""
    if os.environ.get(CHILD_ENV):
        return [], []
    env = child_env(settings)
    servers = [
        Child(f"server {i + 2}", ["serve"], env) for i in range(settings.server_processes - 1)
    ]
    names = enabled_workers(settings) if with_workers else []
    workers = [Child("workers", ["worker", *names], env)] if names else []
    return servers, workers


async def serve(
    settings: Settings, *, with_workers: bool, ready: Callable[[], None] | None = None
) -> None:
    """Serve until SIGINT/SIGTERM, then shut down in order: stop listening and finish the
    requests in flight in every server process (up to SHUTDOWN_TIMEOUT_SECONDS), then
    stop the workers process (so the relay publishes what the servers committed last),
    then the writer and the pool."""
    from gateway.app import create_app

    if with_workers and not os.environ.get(CHILD_ENV):
        # Before the app exists: its wake-up reaches the workers process through this.
        os.environ[WAKEUP_SOCKET_ENV] = f"paygate-wakeup-{os.getpid()}-{settings.port}"
    servers, workers = _children(settings, with_workers=with_workers)
    # The first process of the host counts the database-derived gauges for all of them.
    app = create_app(settings, database_gauges=not os.environ.get(CHILD_ENV))
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_timeout_seconds,
        **server_kwargs(settings),  # header size/count limits, keep-alive bound
    )
    grace = settings.shutdown_timeout_seconds + 5
    await runner.setup()
    try:
        site = web.TCPSite(
            runner,
            settings.host,
            settings.port,
            reuse_port=settings.server_processes > 1,
            ssl_context=_ssl_context(settings),
            backlog=2048,
        )
        await site.start()
        tune_gc()
        for child in (*workers, *servers):
            child.start()
        log.info(
            "paygate listening on %s:%d (%d server processes%s)",
            settings.host, settings.port, 1 + len(servers),
            f", workers in process {workers[0].pid}" if workers else "",
        )  # fmt: skip
        if ready is not None:
            ready()
        await wait_for_stop_signal()
        log.info("stopping: finishing requests in flight")
        await asyncio.gather(stop_all(servers, grace), runner.cleanup())
        await stop_all(workers, grace)
    finally:
        await stop_all([*servers, *workers], grace)
        with suppress(Exception):
            await runner.cleanup()
    log.info("stopped")


async def _serve_command(args: argparse.Namespace, settings: Settings) -> int:
    settings.require_database()
    if not os.environ.get(CHILD_ENV):  # a child's parent checked
        await require_urls(settings)
    await serve(settings, with_workers=False)
    return 0


async def _run_command(args: argparse.Namespace, settings: Settings) -> int:
    settings.require_database()
    await require_urls(settings)
    await serve(settings, with_workers=True)
    return 0


SERVE = Command("serve", "the HTTP server alone", _serve_command)
RUN = Command("run", "server + workers against the configured URLs", _run_command)
