"""`paygate worker NAME...`: background workers alone, with their own small pool (also
the workers process `paygate run` starts beside its servers)."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.config import Settings
from gateway.errors import ConfigError
from workers.cli.command import CHILD_ENV, Command

log = logging.getLogger("paygate")


# The names workers.registry.WORKERS runs (tests/workers/test_registry.py keeps them equal):
# written out so `--help` does not import every worker to list them.
NAMES = ("outbox", "staging", "partitions", "status_poller")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "names", nargs="+", metavar="NAME", help=f"one or more of: {', '.join(NAMES)}"
    )


async def run_workers(settings: Settings, names: list[str]) -> None:
    from gateway.db.pool import create_pool
    from gateway.notify import WAKEUP_SOCKET_ENV, Wakeup, stop_listening
    from workers.cli.serve import wait_for_stop_signal
    from workers.registry import running_workers

    wake = Wakeup()
    # Started by `paygate run`: the servers' writers ring this socket after each commit.
    socket_name = os.environ.get(WAKEUP_SOCKET_ENV)
    listening = wake.listen(socket_name) if socket_name else None
    pool = await create_pool(settings, min_size=1, max_size=max(2, settings.db_pool_max // 2))
    try:
        async with (
            running_workers(pool, settings, wake, only=names) as workers,
            metrics_site(settings),
        ):
            log.info("workers running: %s", ", ".join(w.name for w in workers))
            await wait_for_stop_signal()
    finally:
        if listening is not None:
            stop_listening(listening)
        await pool.close()


@asynccontextmanager
async def metrics_site(settings: Settings) -> AsyncIterator[None]:
    """METRICS_PORT on a worker run on its own (a Kubernetes worker pod, say): its metrics
    (relay lag, dead letters, staging) on `/metrics` there. Under `paygate run` the
    servers expose the workers process's metrics already (multiprocess mode)."""
    if not (settings.enable_metrics and settings.metrics_port) or os.environ.get(CHILD_ENV):
        yield
        return
    from aiohttp import web

    from gateway.http.metrics import metrics_handler

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.metrics_port).start()
        yield
    finally:
        await runner.cleanup()


async def run(args: argparse.Namespace, settings: Settings) -> int:
    from workers.registry import resolve

    settings.require_database()
    try:
        names = resolve(args.names)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    await run_workers(settings, names)
    return 0


COMMAND = Command("worker", f"background workers alone ({', '.join(NAMES)})", run, _arguments)
