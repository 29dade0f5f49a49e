"""One step of bench.scale: every figure, measured on the tables as the fill left them.

Each function returns `{figure name: value}`; names carry their unit. The hot path runs
in one `paygate serve` process started for the step (so its L1 cache is cold), against
the step's Postgres; background jobs (pruning, partition maintenance) run in this process
through the workers' own classes, while an open-loop recording load at `--rate` measures
what they cost the hot path.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import asyncpg
import orjson
import redis.asyncio as aioredis

from bench import ops as ops_bench
from bench import reconcile as reconcile_bench
from bench import scale_fill as fill
from bench.cpu_split import tree_cpu_seconds
from bench.loadgen import Result, build_requests, run, signed_request
from bench.pg_waits import WaitSampler
from bench.run_all import Server
from bench.stack import BenchStack
from gateway.config import Settings
from gateway.db.partition_plan import Month, bound_literal
from gateway.db.pool import create_pool
from gateway.http.console import session as sessions
from gateway.security.auth import READ, mint_token
from workers.partitions import PartitionMaintainer

T = TypeVar("T")
TABLES = ("payments", "payment_references", "webhook_events", "audit_log")
WINDOW = 5.0  # seconds per open-loop load window while a background job runs


@dataclass
class Step:
    """What a step's measurements share."""

    stack: BenchStack
    history: fill.History
    server: Server
    port: int
    seconds: float  # closed-loop recording run
    connections: int
    rate: float  # open-loop recording rate while background jobs run
    duplicates: int
    ops_requests: int
    index: int

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def settings(self, **changes: Any) -> Settings:
        return self.stack.settings().replace(**changes)


# pg_stat_statements counts at each statement's end (the cumulative views flush later).
_COUNTERS = """
SELECT coalesce(sum(wal_bytes), 0) AS wal, coalesce(sum(wal_fpi), 0) AS fpi,
       coalesce(sum(shared_blks_read), 0) AS reads
FROM pg_stat_statements
"""


class _PgCounters:
    """WAL bytes, full-page images and blocks read from outside shared_buffers while the
    block runs: where a cost per payment that grows with the tables comes from."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.delta: dict[str, float] = {}

    async def _read(self) -> dict[str, float]:
        conn = await asyncpg.connect(self.dsn)
        try:
            row = await conn.fetchrow(_COUNTERS)
        finally:
            await conn.close()
        assert row is not None
        return {k: float(v) for k, v in row.items()}

    async def __aenter__(self) -> _PgCounters:
        self._start = await self._read()
        return self

    async def __aexit__(self, *exc: object) -> None:
        end = await self._read()
        self.delta = {k: end[k] - self._start[k] for k in end}

    def per(self, what: str, unit: str, count: int) -> dict[str, float]:
        n = max(count, 1)
        return {
            f"{what}: WAL bytes per {unit}": self.delta["wal"] / n,
            f"{what}: full-page images per {unit}": self.delta["fpi"] / n,
            f"{what}: blocks read into shared_buffers per {unit}": self.delta["reads"] / n,
        }


def p99_ms(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else 0.0


def _check(result: Result, what: str, expected: int) -> None:
    other = {s: n for s, n in result.statuses.items() if s != expected}
    if other or result.errors:
        raise SystemExit(f"{what}: unexpected answers {other}, {result.errors} errors")


async def recording(s: Step) -> dict[str, float]:
    """New payments, closed loop at `connections`: CPU per payment and p99."""
    reqs = build_requests(s.host, int(4000 * s.seconds), s.stack.key, dup_ratio=0)
    pg = s.stack.pg.proc
    assert pg is not None
    servers = [p.pid for p in s.server.procs]

    def cpu() -> tuple[float, float]:
        assert pg is not None
        return sum(tree_cpu_seconds(p) for p in servers), tree_cpu_seconds(pg.pid)

    async with _PgCounters(s.stack.pg.url) as pg_counters:
        before = cpu()
        res = await run(s.url, reqs, rate=0, seconds=s.seconds, connections=s.connections)
        after = cpu()
    _check(res, "recording", 201)
    done = res.statuses[201]
    server_us, pg_us = ((a - b) * 1e6 / done for a, b in zip(after, before, strict=True))
    return pg_counters.per("recording", "payment", done) | {
        "recording: CPU µs/payment (server + Postgres)": server_us + pg_us,
        "recording: server CPU µs/payment": server_us,
        "recording: Postgres CPU µs/payment": pg_us,
        f"recording: p99 ms at {s.connections} connections": p99_ms(res.latencies),
        "recording: payments/s": done / res.elapsed,
    }


_OLD = """
SELECT r.reference_number, p.loan_account_number, p.cif, p.amount, p.payment_date,
       p.payment_channel, p.status
FROM payment_service.payment_references r TABLESAMPLE SYSTEM ($1)
JOIN payment_service.payments p ON p.id = r.payment_id AND p.payment_date = r.payment_date
WHERE r.created_at < now() - interval '1 day'
LIMIT $2
"""


async def duplicates(s: Step, conn: asyncpg.Connection) -> dict[str, float]:
    """Each of `duplicates` old references sent again once, byte-identical business
    fields: L1 never saw them (a fresh server), L2 is flushed, so Postgres answers."""
    total = await conn.fetchval(
        "SELECT reltuples FROM pg_class WHERE oid = 'payment_service.payment_references'::regclass"
    )
    percent = min(100.0, 300.0 * s.duplicates / max(float(total or 1), 1.0))
    rows = await conn.fetch(_OLD, percent, s.duplicates)
    await conn.execute("SELECT pg_stat_statements_reset()")  # the answers' statements only
    ts = int(time.time())
    reqs = []
    for r in rows:
        body = orjson.dumps({
            "reference_number": r[0], "loan_account_number": r[1], "cif": r[2],
            "amount": str(r[3]), "payment_date": r[4].strftime("%Y-%m-%dT%H:%M:%SZ"),
            "payment_channel": r[5], "status": r[6],
        })  # fmt: skip
        reqs.append(signed_request(s.host, s.stack.key, body, ts))
    client = aioredis.from_url(s.stack.redis.url)
    try:
        await client.flushall()
    finally:
        await client.aclose()
    sampler = WaitSampler(s.stack.pg.url, slow_ms=50.0, quiet=True)
    async with _PgCounters(s.stack.pg.url) as pg_counters, sampler:
        res = await run(s.url, reqs, rate=0, seconds=120, connections=s.connections)
    _check(res, "duplicates", 200)
    # Where a tail comes from: the p99 of each second (a stall shows as one bad second)
    # and what Postgres sessions waited on in the slowest samples.
    slow: Counter[str] = Counter()
    for second in sampler.seconds.values():
        slow.update(second.slow)
    oldest = [round(sampler.seconds[k].oldest_ms) for k in sorted(sampler.seconds)]
    print(f"    duplicates: p99 ms per second {res.windows(1.0)}, max"
          f" {max(res.latencies) * 1000:.0f} ms; oldest statement ms per second {oldest};"
          f" waits over 50 ms {slow.most_common(4)}", flush=True)  # fmt: skip
    return pg_counters.per("duplicate", "answer", len(reqs)) | {
        "duplicate of an old reference: p50 ms (L1, L2 cold)": res.percentile(0.5) * 1000,
        "duplicate of an old reference: p99 ms (L1, L2 cold)": p99_ms(res.latencies),
        "duplicate of an old reference: answers/s": len(res.latencies) / res.elapsed,
    }


async def ops_latency(s: Step, conn: asyncpg.Connection) -> dict[str, float]:
    """bench.ops's endpoints, one client, a different payment each round: p95."""
    rows = await conn.fetch(
        "SELECT id::text, reference_number, cif, loan_account_number"
        " FROM payment_service.payments TABLESAMPLE SYSTEM (1) LIMIT 200"
    ) or await conn.fetch(
        "SELECT id::text, reference_number, cif, loan_account_number"
        " FROM payment_service.payments LIMIT 200"
    )
    keys = [ops_bench.Key(*r) for r in rows]
    token = mint_token(ops_bench.SECRET, "bench", [READ], ttl=7200)
    cookie, _ = sessions.new_session(ops_bench.SECRET, token)
    async with aiohttp.ClientSession() as http:
        url = f"{s.url}/api/v1/payments?status=pending&limit=50"
        async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
            first: dict[str, Any] = await r.json()
    eps = ops_bench.endpoints(first["next_cursor"])
    await ops_bench.measure(s.url, eps, keys, token, cookie, s.ops_requests, 10)
    out = {f"ops: {ep.name}: p95 ms": ops_bench.pct(ep.times, 0.95) for ep in eps}
    searches = [v for k, v in out.items() if "search" in k]
    timelines = [v for k, v in out.items() if "timeline" in k or "payment page" in k]
    # The machine's other load moves every answer, the database-free one included: the
    # same figures over that baseline (GET /health/live's p95) show what the tables add.
    base = ops_bench.pct(eps[0].times, 0.95)
    out["ops search: worst p95 ms"] = max(searches)
    out["ops timeline: worst p95 ms"] = max(timelines)
    out["ops search: worst p95 over /health/live p95"] = max(searches) / base
    out["ops timeline: worst p95 over /health/live p95"] = max(timelines) / base
    return out


async def reconciliation(
    s: Step, statement: list[tuple[str, Decimal, datetime]], scratch: Path
) -> dict[str, float]:
    """A statement of the step's statement day (every payment of that day, the bench's
    mix of mismatches) reconciled exactly as an upload is."""
    path = scratch / f"statement-{s.index}.csv"
    reconcile_bench.write_statement_of(path, iter(statement), len(statement))
    try:
        result = await reconcile_bench.reconcile(s.settings(), path)
    finally:
        path.unlink(missing_ok=True)
    return {f"reconcile: {len(statement):,} lines, s": result["seconds"]}


async def _under_load(s: Step, job: Callable[[], Awaitable[T]]) -> tuple[T, float, list[float]]:
    """Run `job` while an open-loop recording load runs (a window before it, then until it
    ends); return its result, its duration and every request's latency."""
    latencies: list[float] = []
    task: asyncio.Task[tuple[T, float]] | None = None

    async def timed() -> tuple[T, float]:
        began = time.perf_counter()
        value = await job()
        return value, time.perf_counter() - began

    while task is None or not task.done():
        reqs = build_requests(s.host, int(s.rate * WINDOW), s.stack.key, dup_ratio=0)
        load = asyncio.ensure_future(
            run(s.url, reqs, rate=s.rate, seconds=WINDOW, connections=s.connections)
        )
        if task is None:
            await asyncio.sleep(1.0)
            task = asyncio.ensure_future(timed())
        res = await load
        _check(res, "recording under load", 201)
        latencies.extend(res.latencies)
    value, took = task.result()
    return value, took, latencies


async def quiet_p99(s: Step) -> dict[str, float]:
    reqs = build_requests(s.host, int(s.rate * WINDOW * 2), s.stack.key, dup_ratio=0)
    res = await run(s.url, reqs, rate=s.rate, seconds=WINDOW * 2, connections=s.connections)
    _check(res, "recording, quiet", 201)
    return {f"recording at {s.rate:.0f}/s: p99 ms": p99_ms(res.latencies)}


async def pruning(s: Step, conn: asyncpg.Connection, rows: int) -> dict[str, float]:
    """A day of references just past the TTL, pruned by the partition worker's own run
    (nothing else due), with recording going on: time, WAL, recording p99."""
    await fill.fill_expired_references(conn, s.history, rows, seed=900 + s.index)
    await conn.execute("VACUUM ANALYZE payment_service.payment_references")
    await conn.execute("SELECT pg_stat_statements_reset()")
    # Nothing to create or retire: partitions as they are, retention covering the fill.
    settings = s.settings(partition_retention_months=s.history.payments_months + 1)
    pool = await create_pool(settings, min_size=1, max_size=2)
    try:
        maintainer = PartitionMaintainer(pool, settings)
        report, took, latencies = await _under_load(s, maintainer.maintain)
    finally:
        await pool.close()
    wal = await conn.fetchval(
        "SELECT coalesce(sum(wal_bytes), 0) FROM pg_stat_statements"
        " WHERE query ILIKE '%DELETE FROM%payment_references%'"
    )
    if report.references_pruned < rows:
        raise SystemExit(f"pruned {report.references_pruned} of {rows} expired references")
    return {
        f"prune {rows:,} expired references: s": took,
        "prune: WAL MB": float(wal) / 2**20,
        f"prune: recording p99 ms at {s.rate:.0f}/s while it runs": p99_ms(latencies),
    }


async def maintenance(s: Step, conn: asyncpg.Connection, default_rows: int) -> dict[str, float]:
    """Partition maintenance's four kinds of work, each alone with recording going on:
    premake a month, create one whose rows wait in DEFAULT, detach the month past
    retention, and detach-and-drop it. Time of the run, p99 of recording and the
    longest heavyweight-lock wait any recording statement had meanwhile."""
    h, out = s.history, {}
    now = Month.of(datetime.now(UTC))
    base = s.settings()
    keep = h.payments_months + 1
    premake = base.partition_premake_months
    old = h.first_month
    # A year-old payment is settled: a month still holding pending payments is held by
    # retention (PARTITION_RETENTION_WAIT, the default), which would stop the run timed here.
    await conn.execute(
        "UPDATE payment_service.payments SET status = 'succeeded'"
        " WHERE status = 'pending' AND payment_date < $1",
        old.add(1).start.replace(tzinfo=None),
    )
    await fill.fill_default(conn, h, now.add(premake + 2), default_rows, seed=700 + s.index)
    phases = [
        ("premake a month", base.replace(partition_retention_months=keep,
                                         partition_premake_months=premake + 1)),
        (f"create a month, move {default_rows:,} DEFAULT rows",
         base.replace(partition_retention_months=keep, partition_premake_months=premake + 2)),
        ("detach the month past retention",
         base.replace(partition_premake_months=premake + 2)),
        ("detach and drop it",
         base.replace(partition_premake_months=premake + 2, partition_retention_action="drop")),
    ]  # fmt: skip
    for name, settings in phases:
        pool = await create_pool(settings, min_size=1, max_size=2)
        try:
            sampler = WaitSampler(s.stack.pg.url, quiet=True)
            async with sampler:
                report, took, latencies = await _under_load(
                    s, PartitionMaintainer(pool, settings).maintain
                )
        finally:
            await pool.close()
        if report.result != "ok":
            raise SystemExit(f"maintenance ({name}): {report.result} {report}")
        out[f"maintenance: {name}: ms"] = took * 1000
        out[f"maintenance: {name}: recording p99 ms"] = p99_ms(latencies)
        out[f"maintenance: {name}: longest lock wait ms"] = sampler.lock_max_ms
        if report.detached:
            await _reattach(conn, "payments", old)
    h.filled[old] = 0  # dropped: the next step fills it again
    for table in ("payments", "webhook_events", "audit_log"):
        for month in (now.add(premake + 1), now.add(premake + 2)):
            await conn.execute(f"DROP TABLE IF EXISTS payment_service.{table}_{month.suffix}")
    return out


async def _reattach(conn: asyncpg.Connection, table: str, month: Month) -> None:
    name = f"{table}_{month.suffix}"
    lo, hi = bound_literal(month.start, False), bound_literal(month.add(1).start, False)
    await conn.execute(f"ALTER TABLE payment_service.{name}_detached RENAME TO {name}")
    await conn.execute(
        f"ALTER TABLE payment_service.{table} ATTACH PARTITION payment_service.{name}"
        f" FOR VALUES FROM ({lo}) TO ({hi})"
    )


_SIZES = """
SELECT t.name,
       sum(pg_table_size(p.relid)) AS heap,
       sum(pg_indexes_size(p.relid)) AS indexes
FROM unnest($1::text[]) AS t(name)
CROSS JOIN LATERAL (
    SELECT relid FROM pg_partition_tree(('payment_service.' || t.name)::regclass)
    UNION SELECT ('payment_service.' || t.name)::regclass  -- a plain table has no tree
) p
GROUP BY t.name
"""


async def sizes(conn: asyncpg.Connection) -> tuple[int, dict[str, float]]:
    """Payments kept and table + index bytes per payment, per table and in all."""
    payments = int(await conn.fetchval("SELECT count(*) FROM payment_service.payments"))
    out: dict[str, float] = {}
    total = 0
    for r in await conn.fetch(_SIZES, list(TABLES)):
        both = int(r["heap"]) + int(r["indexes"])
        total += both
        out[f"bytes/payment: {r['name']} (table + indexes)"] = both / max(payments, 1)
    out["bytes/payment: all four (table + indexes)"] = total / max(payments, 1)
    return payments, out


_VACUUM = """
SELECT relname, n_live_tup, n_dead_tup,
       extract(epoch FROM now() - greatest(last_autovacuum, last_vacuum)) AS since
FROM pg_stat_user_tables WHERE schemaname = 'payment_service'
"""


async def autovacuum(conn: asyncpg.Connection) -> dict[str, float]:
    """How far behind autovacuum is: dead rows in all, dead rows in tables already past
    their autovacuum threshold (50 + 20% of live rows: due, not yet done), and the
    longest time since such a table was last vacuumed."""
    dead = due = 0
    oldest = 0.0
    for r in await conn.fetch(_VACUUM):
        dead += r["n_dead_tup"]
        if r["n_dead_tup"] > 50 + 0.2 * r["n_live_tup"]:
            due += r["n_dead_tup"]
            oldest = max(oldest, float(r["since"] if r["since"] is not None else -1))
    return {
        "autovacuum: dead rows": float(dead),
        "autovacuum: dead rows in tables past their threshold": float(due),
        "autovacuum: longest since such a table's last vacuum, s": oldest,
    }


_TOP = """
SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 70) AS query, calls,
       mean_exec_time AS mean_ms, max_exec_time AS max_ms,
       shared_blks_read::float / greatest(calls, 1) AS reads_per_call,
       wal_bytes::float / greatest(calls, 1) AS wal_per_call
FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT $1
"""


async def top_statements(conn: asyncpg.Connection, count: int = 6) -> list[dict[str, Any]]:
    """pg_stat_statements' heaviest statements since its last reset (for causes)."""
    return [dict(r) for r in await conn.fetch(_TOP, count)]
