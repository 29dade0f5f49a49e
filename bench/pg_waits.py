"""What the writers' statements wait on, second by second, during a bench run.

`WaitSampler` polls `pg_stat_activity` every few milliseconds for the server's
statements (`application_name = 'paygate'`) and, per second of the run, prints the oldest
running statement it saw, the host's dirty page cache (`/proc/meminfo`) and the wait
events of statements older than `slow_ms`. A tail that comes from the disk shows as
`IO/WalSync` and `LWLock/WALWrite` in the slow seconds; one that comes from a query
competing for the CPU shows that query's head. The polling costs the load generator's
process a few per cent of a core, so its CPU figure is higher with `--waits`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field

import asyncpg

_ACTIVE = """
SELECT coalesce(wait_event_type || '/' || wait_event, 'CPU') AS wait,
       left(regexp_replace(query, '\\s+', ' ', 'g'), 48) AS head,
       extract(epoch FROM clock_timestamp() - query_start) * 1000 AS ms
FROM pg_stat_activity
WHERE state = 'active' AND application_name = 'paygate' AND pid <> pg_backend_pid()
"""


def dirty_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Dirty:"):
                return int(line.split()[1]) // 1024
    return -1


@dataclass
class Second:
    dirty_mb: int
    oldest_ms: float = 0.0
    slow: Counter[str] = field(default_factory=Counter)

    def describe(self, at: int) -> str:
        slow = ", ".join(f"{what} x{n}" for what, n in self.slow.most_common(3))
        return f"{at:3d}s  dirty {self.dirty_mb:5d} MB  oldest {self.oldest_ms:6.1f} ms  {slow}"


class WaitSampler:
    """Async context manager: samples while the block runs, prints the seconds after."""

    def __init__(
        self, dsn: str, *, every: float = 0.004, slow_ms: float = 20.0, quiet: bool = False
    ) -> None:
        self.dsn, self.every, self.slow_ms, self.quiet = dsn, every, slow_ms, quiet
        self.seconds: dict[int, Second] = {}
        # Heavyweight-lock waits seen (samples per wait event) and the longest one, for a
        # bench that asks what the hot path waited on while DDL ran (bench.scale).
        self.lock_waits: Counter[str] = Counter()
        self.lock_max_ms = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            started = time.monotonic()
            while True:
                rows = await conn.fetch(_ACTIVE)
                at = int(time.monotonic() - started)
                second = self.seconds.get(at)
                if second is None:
                    second = self.seconds[at] = Second(dirty_mb())
                for r in rows:
                    ms = float(r["ms"] or 0.0)
                    second.oldest_ms = max(second.oldest_ms, ms)
                    if r["wait"].startswith("Lock/"):
                        self.lock_waits[r["wait"]] += 1
                        self.lock_max_ms = max(self.lock_max_ms, ms)
                    if ms > self.slow_ms:
                        second.slow[f"{r['wait']} [{r['head'].strip()}]"] += 1
                await asyncio.sleep(self.every)
        finally:
            with suppress(Exception):
                await conn.close()

    async def __aenter__(self) -> WaitSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self.quiet:
            return
        for at, second in sorted(self.seconds.items()):
            print(second.describe(at))

    @property
    def oldest_ms(self) -> float:
        return max((s.oldest_ms for s in self.seconds.values()), default=0.0)
