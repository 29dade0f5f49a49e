"""`paygate serve` and `paygate run`: the HTTP server, alone or with the background
workers in the same process.

The CLI lives on the workers side because it composes both halves; `gateway/`
never imports `workers/`. Workers run beside the app as a companion (gateway.app):
they share its pool and stop before it closes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, suppress

import asyncpg
from aiohttp import web

from gateway.app import Companion
from gateway.config import Settings
from gateway.notify import Wakeup
from gateway.observability.gc_pauses import observe_gc_pauses
from gateway.security.slow_clients import server_kwargs
from workers.cli.command import CHILD_ENV, Command

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


def _spawn_siblings(settings: Settings) -> list[subprocess.Popen[bytes]]:
    """WEB_CONCURRENCY > 1: extra `paygate serve` processes on the same port
    (SO_REUSEPORT: the kernel spreads connections). They run no background workers."""
    if settings.web_concurrency <= 1 or os.environ.get(CHILD_ENV):
        return []
    env = dict(os.environ, **{CHILD_ENV: "1"})
    inherited = {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "WEBHOOK_SECRET": " ".join(settings.webhook_secret),
        "PORT": str(settings.port),
    }
    env.update({k: v for k, v in inherited.items() if v})
    return [
        subprocess.Popen([sys.executable, "-m", "workers.cli", "serve"], env=env)
        for _ in range(settings.web_concurrency - 1)
    ]


async def _stop_siblings(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        while p.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if p.poll() is None:
            p.kill()


async def serve(
    settings: Settings, *, with_workers: bool, ready: Callable[[], None] | None = None
) -> None:
    """Serve until SIGINT/SIGTERM, then shut down in order: stop listening, finish the
    requests in flight (up to SHUTDOWN_TIMEOUT_SECONDS), stop workers, writer, pool."""
    from gateway.app import create_app

    companions = [_workers_companion(settings)] if with_workers else []
    # The first process of the host counts the database-derived gauges for all of them.
    app = create_app(settings, companions=companions, database_gauges=not os.environ.get(CHILD_ENV))
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_timeout_seconds,
        **server_kwargs(settings),  # header size/count limits, keep-alive bound
    )
    await runner.setup()
    try:
        site = web.TCPSite(
            runner,
            settings.host,
            settings.port,
            reuse_port=settings.web_concurrency > 1,
            ssl_context=_ssl_context(settings),
            backlog=2048,
        )
        await site.start()
        tune_gc()
        siblings = _spawn_siblings(settings)
        log.info(
            "paygate listening on %s:%d (%d processes)",
            settings.host, settings.port, 1 + len(siblings),
        )  # fmt: skip
        if ready is not None:
            ready()
        await wait_for_stop_signal()
        log.info("stopping: finishing requests in flight")
        await _stop_siblings(siblings, settings.shutdown_timeout_seconds + 5)
    finally:
        with suppress(Exception):
            await runner.cleanup()
    log.info("stopped")


def _workers_companion(settings: Settings) -> Companion:
    from workers.registry import running_workers

    def companion(pool: asyncpg.Pool, wake: Wakeup) -> AbstractAsyncContextManager[object]:
        return running_workers(pool, settings, wake)

    return companion


async def _serve_command(args: argparse.Namespace, settings: Settings) -> int:
    settings.require_database()
    await serve(settings, with_workers=False)
    return 0


async def _run_command(args: argparse.Namespace, settings: Settings) -> int:
    settings.require_database()
    await serve(settings, with_workers=True)
    return 0


SERVE = Command("serve", "the HTTP server alone", _serve_command)
RUN = Command("run", "server + workers against the configured URLs", _run_command)
