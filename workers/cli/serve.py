"""Running paygate: the HTTP server, the background workers, or both in one process.

The CLI lives on the workers side because it composes both halves; `gateway/`
never imports `workers/`. Workers attach to the app as one more cleanup context,
so they share its pool and stop before it closes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import suppress

import asyncpg
from aiohttp import web

from gateway import appkeys
from gateway.config import Settings
from gateway.notify import Wakeup
from gateway.observability.gc_pauses import observe_gc_pauses
from gateway.security.slow_clients import server_kwargs
from workers.base import Worker

log = logging.getLogger(__name__)

WorkerFactory = Callable[[asyncpg.Pool, Settings, Wakeup], Worker]


def worker_factories() -> dict[str, tuple[str, WorkerFactory]]:
    """name -> (the setting that switches it on, how to build it). Imports stay lazy so
    `paygate worker outbox` does not load the others."""

    def outbox(pool: asyncpg.Pool, settings: Settings, wake: Wakeup) -> Worker:
        from workers.outbox import OutboxRelay

        return OutboxRelay(pool, settings, wake)

    def staging(pool: asyncpg.Pool, settings: Settings, wake: Wakeup) -> Worker:
        from workers.staging import StagingWorker

        return StagingWorker(pool, settings, wake)

    def partitions(pool: asyncpg.Pool, settings: Settings, wake: Wakeup) -> Worker:
        from workers.partitions import PartitionWorker

        return PartitionWorker(pool, settings)

    def reconcile(pool: asyncpg.Pool, settings: Settings, wake: Wakeup) -> Worker:
        from workers.status_poller import StatusPoller

        return StatusPoller(pool, settings, wake)

    return {
        "outbox": ("enable_outbox_relay", outbox),
        "staging": ("enable_staging_processor", staging),
        "partitions": ("enable_partition_maintenance", partitions),
        "reconcile": ("enable_status_poller", reconcile),
    }


def available_workers() -> list[str]:
    return list(worker_factories())


def build_workers(
    pool: asyncpg.Pool, settings: Settings, wake: Wakeup, only: list[str] | None = None
) -> list[Worker]:
    built = []
    for name, (switch, factory) in worker_factories().items():
        if only is not None and name not in only:
            continue
        if only is None and not getattr(settings, switch):
            continue
        built.append(factory(pool, settings, wake))
    return built


def attach_workers(app: web.Application, only: list[str] | None = None) -> None:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[appkeys.SETTINGS]
        workers = build_workers(app[appkeys.POOL], settings, app[appkeys.OUTBOX_WAKE], only)
        for w in workers:
            await w.start()
            log.info("worker %s started", w.name)
        yield
        for w in reversed(workers):
            await w.stop(grace=settings.shutdown_timeout_seconds)

    app.cleanup_ctx.append(ctx)


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
    from workers.cli.main import CHILD_ENV

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
    from workers.cli.main import CHILD_ENV

    app = create_app(settings)
    if os.environ.get(CHILD_ENV):
        app[appkeys.DATABASE_GAUGES] = False  # the first process of the host counts
    if with_workers:
        attach_workers(app)
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


async def run_workers(settings: Settings, names: list[str]) -> None:
    """`paygate worker NAME`: workers alone, with their own small pool."""
    from gateway.db.pool import create_pool

    pool = await create_pool(settings, min_size=1, max_size=max(2, settings.db_pool_max // 2))
    workers = build_workers(pool, settings, Wakeup(), only=names)
    try:
        for w in workers:
            await w.start()
        log.info("workers running: %s", ", ".join(w.name for w in workers))
        await wait_for_stop_signal()
    finally:
        for w in reversed(workers):
            await w.stop(grace=settings.shutdown_timeout_seconds)
        await pool.close()
