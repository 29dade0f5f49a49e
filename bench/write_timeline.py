"""What the group-commit writer and Postgres's WAL did during a bench run.

`Timeline` scrapes a server's `/metrics` every few seconds and prints, per interval, the
mean commit time, the batches committed, their mean size, the server-side request
latency and the collector's passes (`paygate_gc_pause_seconds`): a tail that grows while CPU per request stays flat shows up here as a commit
time that grows. `wal_summary` reads Postgres's own WAL counters (`pg_stat_io`) at the
end: how many WAL flushes the run cost and how long they took.
"""

from __future__ import annotations

import asyncio
import urllib.request
from contextlib import suppress
from typing import Any

import asyncpg

from gateway.db.events_sql import sql_literal

_SERIES = {
    "paygate_write_commit_duration_seconds_sum": "commit_s",
    "paygate_write_commit_duration_seconds_count": "batches",
    "paygate_write_batch_size_sum": "rows",
    'paygate_webhook_request_duration_seconds_sum{channel="generic"}': "latency_s",
    'paygate_webhook_request_duration_seconds_count{channel="generic"}': "requests",
}


def scrape(url: str) -> dict[str, float]:
    """The writer's and the webhook's cumulative series from one `/metrics` page."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {"gc_s": 0.0, "gc_passes": 0.0}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in _SERIES:
            out[_SERIES[name]] = float(value)
        elif name.startswith("paygate_gc_pause_seconds_sum{"):  # every generation
            out["gc_s"] += float(value)
        elif name.startswith("paygate_gc_pause_seconds_count{"):
            out["gc_passes"] += float(value)
    return out


def describe(seconds: float, before: dict[str, float], after: dict[str, float]) -> str:
    d = {
        k: after.get(k, 0.0) - before.get(k, 0.0) for k in [*_SERIES.values(), "gc_s", "gc_passes"]
    }
    batches, requests = d["batches"] or 1.0, d["requests"] or 1.0
    return (
        f"t={seconds:4.0f}s  commit {1000 * d['commit_s'] / batches:5.1f} ms"
        f"  batches {d['batches']:5.0f}  rows/batch {d['rows'] / batches:5.1f}"
        f"  server latency {1000 * d['latency_s'] / requests:5.1f} ms"
        f"  gc {d['gc_passes']:3.0f} passes {1000 * d['gc_s']:5.1f} ms"
    )


class Timeline:
    """Prints `describe` every `every` seconds while the run lasts."""

    def __init__(self, url: str, every: float = 5.0) -> None:
        self.url, self.every = url, every
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        before = await asyncio.to_thread(scrape, self.url)
        elapsed = 0.0
        while True:
            await asyncio.sleep(self.every)
            elapsed += self.every
            after = await asyncio.to_thread(scrape, self.url)
            print(describe(elapsed, before, after), flush=True)
            before = after

    def __enter__(self) -> Timeline:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def reset_wal_stats(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_stat_reset_shared('io'), pg_stat_reset_shared('wal')")
    finally:
        await conn.close()


async def wal_summary(dsn: str) -> dict[str, Any]:
    """WAL written, flushes and their total time by client backends (the committers)."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            """
            SELECT (SELECT wal_bytes FROM pg_stat_wal) AS wal_bytes,
                   sum(fsyncs) FILTER (WHERE context = 'normal') AS flushes,
                   sum(fsync_time) FILTER (WHERE context = 'normal') AS flush_ms,
                   sum(writes) FILTER (WHERE context = 'init') AS segments_created,
                   sum(write_time + fsync_time) FILTER (WHERE context = 'init') AS creating_ms
            FROM pg_stat_io WHERE object = 'wal' AND backend_type = 'client backend'
            """
        )
    finally:
        with suppress(Exception):
            await conn.close()
    return dict(row) if row is not None else {}


async def set_postgres(dsn: str, settings: list[str]) -> None:
    """`name=value` pairs through ALTER SYSTEM and a reload (experiments only)."""
    conn = await asyncpg.connect(dsn)
    try:
        for pair in settings:
            name, _, value = pair.partition("=")
            if not name.replace("_", "").isalnum():
                raise ValueError(f"not a setting name: {name!r}")
            await conn.execute(f"ALTER SYSTEM SET {name} = {sql_literal(value)}")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()
