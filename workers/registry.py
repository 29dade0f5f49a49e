"""Every background worker paygate has, by name, with the setting that switches it on.

Imported explicitly (no discovery): a worker missing from this table does not exist,
and a test holds the table to the list docs/configuration.md documents.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from gateway.config import Settings
from gateway.notify import Wakeup
from workers.base import Worker
from workers.outbox import OutboxRelay
from workers.partitions import PartitionWorker
from workers.staging import StagingWorker
from workers.status_poller import StatusPoller

log = logging.getLogger(__name__)

Factory = Callable[[asyncpg.Pool, Settings, Wakeup], Worker]


@dataclass(frozen=True)
class WorkerSpec:
    switch: str  # the Settings field that turns it on in `paygate run`
    build: Factory


WORKERS: dict[str, WorkerSpec] = {
    "outbox": WorkerSpec("enable_outbox_relay", OutboxRelay),
    "staging": WorkerSpec("enable_staging_processor", StagingWorker),
    "partitions": WorkerSpec(
        "enable_partition_maintenance", lambda pool, settings, wake: PartitionWorker(pool, settings)
    ),
    "status_poller": WorkerSpec("enable_status_poller", StatusPoller),
}

# Names accepted for a while after a rename; `paygate worker reconcile` meant the poller.
ALIASES = {"reconcile": "status_poller"}


def resolve(names: Sequence[str]) -> list[str]:
    """Worker names as given on the command line, aliases resolved; unknown ones raise
    ValueError naming the first and the choices."""
    resolved = []
    for name in names:
        real = ALIASES.get(name, name)
        if real not in WORKERS:
            raise ValueError(f"unknown worker {name!r}; one of {', '.join(WORKERS)}")
        if real != name:
            log.warning("worker %r is now called %r", name, real)
        resolved.append(real)
    return resolved


def build_workers(
    pool: asyncpg.Pool, settings: Settings, wake: Wakeup, only: Sequence[str] | None = None
) -> list[Worker]:
    """The named workers, or (only=None) every worker its setting switches on."""
    return [
        spec.build(pool, settings, wake)
        for name, spec in WORKERS.items()
        if (name in only if only is not None else getattr(settings, spec.switch))
    ]


@asynccontextmanager
async def running_workers(
    pool: asyncpg.Pool, settings: Settings, wake: Wakeup, only: Sequence[str] | None = None
) -> AsyncIterator[list[Worker]]:
    """Start the workers, yield them, stop them in reverse order (each gets the grace)."""
    workers = build_workers(pool, settings, wake, only)
    started: list[Worker] = []
    try:
        for w in workers:
            await w.start()
            started.append(w)
            log.info("worker %s started", w.name)
        yield started
    finally:
        for w in reversed(started):
            await w.stop(grace=settings.shutdown_timeout_seconds)
