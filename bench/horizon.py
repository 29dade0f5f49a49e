"""Who holds the xmin horizon back, sampled every 100 ms while a bench phase runs.

Postgres keeps every row version that some snapshot might still need: the oldest
`backend_xmin` (or running `backend_xid`) of any session is the horizon. A queue drained
by DELETE walks its deleted rows until the horizon passes them, so its cost per event
follows write rate x horizon age. This sampler records, per sample, which session held
the oldest xmin and how old it was (in transactions, and its transaction's age in ms),
classified by what the session was doing, and reports per class how often it was the
holder and how far back it held the horizon. With the index tuples read on the queue's
relations per published event (`queue_reads`), that says whether the horizon explains
the relay's cost.

    sampler = HorizonSampler(dsn); sampler.start(); ...; report = await sampler.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from typing import Any

import asyncpg

INTERVAL = 0.1

_SAMPLE = """
SELECT pid, backend_type, state, left(query, 160) AS query,
       age(backend_xmin) AS xmin_age, age(backend_xid) AS xid_age,
       extract(epoch FROM now() - xact_start) * 1000 AS xact_ms
FROM pg_stat_activity
WHERE pid <> pg_backend_pid() AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL)
"""

# Index tuples read on the relations a relay reads (the outbox, and the event log where
# it exists): what a walk over dead entries costs.
QUEUE_READS = """
SELECT coalesce(sum(idx_tup_read), 0) FROM pg_stat_user_indexes
WHERE schemaname = 'payment_service' AND (relname = 'outbox' OR relname LIKE 'event\\_%')
"""


def classify(row: asyncpg.Record) -> str:
    """What the session holding a snapshot was doing."""
    kind = row["backend_type"] or ""
    if kind != "client backend":
        return kind
    query = " ".join((row["query"] or "").split()).lower()
    state = row["state"] or ""
    if "with win as materialized" in query or "delete from payment_service.outbox" in query:
        what = "relay claim (claim-and-delete)"
    elif "with lanes as materialized" in query or "event_cursors" in query:
        what = "relay (event log)"
    elif "with input as" in query and "payment_staging" in query:
        what = "staging batch"
    elif "with input as" in query:
        what = "group-commit writer"
    elif "analyze" in query or "vacuum" in query:
        what = "analyze/vacuum"
    elif "outbox_pending" in query or "events_pending" in query or "pg_class" in query:
        what = "gauges/health"
    elif "repeatable read" in query or "holder" in query:
        what = "held snapshot"
    else:
        what = "other: " + query[:40]
    return f"{what} [{state}]"


class HorizonSampler:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.samples = 0
        self.holders: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.oldest: list[int] = []

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while not self._stop.is_set():
                rows = await conn.fetch(_SAMPLE)
                self.samples += 1
                held = [r for r in rows if r["xmin_age"] is not None or r["xid_age"] is not None]
                if held:
                    top = max(held, key=lambda r: max(r["xmin_age"] or 0, r["xid_age"] or 0))
                    age = max(top["xmin_age"] or 0, top["xid_age"] or 0)
                    self.oldest.append(age)
                    self.holders[classify(top)].append((age, float(top["xact_ms"] or 0.0)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), INTERVAL)
        finally:
            await conn.close()

    async def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._task is not None:
            await self._task
        return self.report()

    def report(self) -> dict[str, Any]:
        def pct(values: list[float], q: float) -> float:
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0

        by_holder = {}
        for what, seen in sorted(self.holders.items(), key=lambda kv: -len(kv[1])):
            ages = [float(a) for a, _ in seen]
            ms = [m for _, m in seen]
            by_holder[what] = {
                "share_of_samples": round(len(seen) / max(self.samples, 1), 3),
                "horizon_age_xids_p50": pct(ages, 0.5),
                "horizon_age_xids_max": pct(ages, 1.0),
                "its_transaction_ms_p50": round(pct(ms, 0.5), 1),
                "its_transaction_ms_max": round(pct(ms, 1.0), 1),
            }
        oldest = [float(a) for a in self.oldest]
        return {
            "samples": self.samples,
            "horizon_age_xids_p50": pct(oldest, 0.5),
            "horizon_age_xids_p99": pct(oldest, 0.99),
            "oldest_holder": by_holder,
        }
