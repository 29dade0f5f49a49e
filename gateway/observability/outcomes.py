"""Every webhook answered, counted by channel and outcome, for all instances to read.

The webhook handler adds to a dict in this process (no I/O on the request path); a task
adds the counts to `payment_service.webhook_outcomes` (sql/152) once a second, in one
statement, and once more at shutdown. If Postgres cannot take them they are kept for the
next round, so a database outage delays the counts without losing them. The refused
deliveries webhook_events never stores (401, 403, 413, 429, 503, unknown channels) and the
duplicates answered from memory are counted here like every other answer, so "webhooks
today" and its breakdown by outcome are the same numbers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import asyncpg

from gateway.db import counts

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
FLUSH_TIMEOUT = 5.0
NAME_MAX = 100  # the table's column widths
OUTCOME_MAX = 32


class OutcomeTally:
    """This process's answers not yet added to the table."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str], int] = {}
        self._lock = asyncio.Lock()

    def add(self, channel: str, outcome: str) -> None:
        # A plain dict: `Counter[k] += 1` measured twice the cost on the request path.
        key = (channel, outcome)
        pending = self._pending
        pending[key] = pending.get(key, 0) + 1

    async def flush(self, pool: asyncpg.Pool) -> None:
        async with self._lock:  # one flush at a time: a page's and the task's
            if not self._pending:
                return
            batch, self._pending = self._pending, {}
            rows: Counter[tuple[str, str]] = Counter()
            for (channel, outcome), n in batch.items():
                rows[(channel[:NAME_MAX], outcome[:OUTCOME_MAX])] += n
            try:
                await counts.add_webhook_outcomes(pool, rows, FLUSH_TIMEOUT)
            except Exception as exc:  # any failure: the counts wait for the next round
                for key, n in batch.items():  # kept for the next round
                    self._pending[key] = self._pending.get(key, 0) + n
                log.warning("webhook outcome counts not saved yet: %s", type(exc).__name__)

    async def run(self, pool: asyncpg.Pool, interval: float = FLUSH_SECONDS) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.flush(pool)
