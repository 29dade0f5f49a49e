"""End to end, in the shape users deploy: recorded *and* published, from `make run` as shipped.

Starts `paygate dev` exactly as `make run` does (no WEB_CONCURRENCY: every usable CPU;
the relay publishing; only ports and the data dir chosen here), consumes the events
topic with its own consumer process, and counts a payment as done only when it was
both acknowledged (2xx) and seen on the topic. In one run, on this machine:

  bare        aiohttp read + verify + parse, as many processes as paygate's servers,
              closed loop at --ceiling-connections, then at --c64-connections
  ceiling     paygate, closed loop at --ceiling-connections, unique new payments
  c64         paygate, closed loop at --c64-connections (the `wrk -c64` shape)
  sustained   paygate, open loop at --rate for --seconds: ack latency p50/p99, publish
              lag p50/p99 (ack at the generator -> first seen by the consumer), every
              payment verified on the topic
  hold        paygate, open loop at --rate for --hold-seconds while another session holds
              a REPEATABLE READ snapshot (the xmin horizon) the whole time: publish lag
              p99 per 10 s window, the relay's Postgres CPU and index reads per event
  duplicates  paygate, closed loop at --c64-connections, one delivery sent again and
              again (a provider retrying): answered/s against bare at 64 connections
  drain       --drain-count payments recorded with the workers process stopped, then
              drained: the relay's CPU per published event (its process, and the
              Postgres backends serving it), at full batches

Each paygate phase reports CPU per payment by process (server processes, the workers
process with the relay, Postgres, Redis, broker, generator, consumer), who held the xmin
horizon back (bench/horizon.py: sampled every 100 ms) with the index tuples read on the
relay's relations per published event, and the sustained phase the bytes written per
payment (tables, indexes, WAL). A phase is void unless every
request is accounted for: sent = acknowledged + refused + timed out, and acknowledged =
seen on the topic + still queued at the cut-off (after the drain wait).

    python -m bench.e2e                                  # the recorded figures
    python -m bench.e2e --rate 1000 --seconds 5 --ceiling-seconds 3    # a smoke run
    python -m bench.e2e --code-dir /tmp/main-src         # another tree's `paygate dev`
                                                         # (same bench, same machine)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import psutil

from bench import wal_split
from bench.horizon import QUEUE_READS, HorizonSampler
from bench.loadgen import PATH, Result, payment_body, run
from gateway.ingest.signatures import decode_secret, sign
from workers.cli.devstack import EmbeddedPostgres, free_port

TOPIC = "payment.events"
DRAIN_TIMEOUT = 60.0

_RELATIONS = """
SELECT c.relname, c.relkind = 'i' AS is_index, pg_relation_size(c.oid) AS bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'payment_service' AND c.relkind IN ('r', 'i')
"""
_HOT_TABLES = (
    "payment_service.payments, payment_service.payment_references, payment_service.outbox,"
    " payment_service.webhook_events, payment_service.audit_log"
)


# -- the consumer process -------------------------------------------------------------------


async def consume(bootstrap: str, progress: Path, out: Path) -> None:
    """Read the topic from the start until SIGTERM; keep the first time each key was seen.
    Writes the count of distinct keys to `progress` every 100 ms, everything to `out`."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    # A short fetch wait: the lag measured is the relay's, not the consumer's long poll
    # (aiokafka's default lets the broker hold a fetch up to 500 ms).
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=5,
    )
    await consumer.start()
    seen: dict[str, float] = {}
    records = 0
    try:
        while True:
            await consumer.topics()
            parts = consumer.partitions_for_topic(TOPIC)
            if parts:
                break
            await asyncio.sleep(0.2)
        tps = [TopicPartition(TOPIC, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        last = 0.0
        while not stop.is_set():
            batches = await consumer.getmany(*tps, timeout_ms=50, max_records=5000)
            now = time.time()
            for batch in batches.values():
                for record in batch:
                    records += 1
                    if record.key is not None:
                        seen.setdefault(record.key.decode(), now)
            if now - last > 0.1:
                progress.with_suffix(".tmp").write_text(str(len(seen)))
                progress.with_suffix(".tmp").replace(progress)
                last = now
    finally:
        await consumer.stop()
        out.write_bytes(orjson.dumps({"seen": seen, "records": records}))


# -- processes and their CPU ------------------------------------------------------------------


def _cpu(proc: psutil.Process, reaped: bool) -> float:
    """user+system of a process; with `reaped`, also of its children it has waited for
    (a postmaster's exited backends)."""
    try:
        t = proc.cpu_times()
    except psutil.Error:
        return 0.0
    total = t.user + t.system
    if reaped:
        total += t.children_user + t.children_system
    return total


@dataclass
class Processes:
    """The processes of one `paygate dev`, grouped as the figures split them."""

    root: psutil.Process
    consumer: psutil.Process | None = None

    def groups(self) -> dict[str, list[tuple[psutil.Process, bool]]]:
        out: dict[str, list[tuple[psutil.Process, bool]]] = {
            "server": [(self.root, False)], "relay+workers": [], "postgres": [], "redis": [],
            "broker": [],
        }  # fmt: skip
        for child in self.root.children():
            try:
                name, cmd = child.name(), child.cmdline()
            except psutil.Error:
                continue
            if "workers.cli" in cmd:
                what = cmd[cmd.index("workers.cli") + 1]
                out["server" if what == "serve" else "relay+workers"].append((child, False))
            elif name == "postgres":
                out["postgres"].append((child, True))
                out["postgres"] += [(p, False) for p in child.children()]
            elif name.startswith("redis"):
                out["redis"].append((child, False))
            elif name == "tansu":
                out["broker"].append((child, False))
        return out

    def _backend_clients(
        self, groups: dict[str, list[tuple[psutil.Process, bool]]]
    ) -> dict[int, str]:
        """Postgres backend pid -> the group of the process on the other end of its
        connection (matched by TCP port pairs)."""
        owner = {p.pid: g for g in ("server", "relay+workers") for p, _ in groups[g]}
        backends = {p.pid for p, reaped in groups["postgres"] if not reaped}
        by_port: dict[tuple[int, int], str] = {}
        backend_ends: dict[int, tuple[int, int]] = {}
        for c in psutil.net_connections(kind="tcp"):
            if not c.raddr or c.pid is None:
                continue
            if c.pid in owner:
                by_port[(c.laddr.port, c.raddr.port)] = owner[c.pid]
            elif c.pid in backends:
                backend_ends[c.pid] = (c.raddr.port, c.laddr.port)
        return {pid: by_port[end] for pid, end in backend_ends.items() if end in by_port}

    @property
    def server_processes(self) -> int:
        return len(self.groups()["server"])

    def snapshot(self) -> dict[str, float]:
        groups = self.groups()
        snap = {g: sum(_cpu(p, r) for p, r in ps) for g, ps in groups.items()}
        # Postgres by kind of process (its title): client backends, walwriter,
        # checkpointer, ...; "exited" is what the postmaster reaped (autovacuum workers,
        # closed connections).
        serving = self._backend_clients(groups)
        for p, reaped in groups["postgres"]:
            try:
                title = " ".join(p.cmdline())
            except psutil.Error:
                continue
            kind = "exited" if reaped else _pg_kind(title)
            if kind == "backend":
                kind = f"backend for {serving.get(p.pid, 'other clients')}"
            value = _cpu(p, False) if not reaped else _cpu(p, True) - _cpu(p, False)
            snap[f"pg:{kind}"] = snap.get(f"pg:{kind}", 0.0) + value
        t = os.times()
        snap["generator"] = t.user + t.system
        snap["consumer"] = _cpu(self.consumer, False) if self.consumer else 0.0
        return snap


def _pg_kind(title: str) -> str:
    words = title.removeprefix("postgres: ").split()
    if not words:
        return "other"
    if (
        len(words) >= 3
        and "@" not in words[0]
        and words[0]
        not in (
            "checkpointer",
            "walwriter",
            "background",
            "autovacuum",
            "logical",
            "io",
        )
    ):  # "user database host(port) state": a client backend
        return "backend"
    return " ".join(words[:2])


def _cpu_per_payment(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, Any]:
    used = {k: max(0.0, after[k] - before.get(k, 0.0)) for k in after}
    per = {k: round(v / n * 1e6, 1) for k, v in used.items()} if n else {}
    total = sum(v for k, v in used.items() if not k.startswith("pg:"))
    per["total"] = round(total / n * 1e6, 1) if n else 0.0
    return {"us_per_payment": per, "cpu_seconds": {k: round(v, 2) for k, v in used.items()}}


# -- requests -------------------------------------------------------------------------------


def signed_requests(host: str, key: bytes, count: int, tag: str) -> tuple[list[bytes], list[str]]:
    """`count` pre-signed unique new payments and their references."""
    now = datetime.now(UTC)
    ts = int(time.time())
    reqs, refs = [], []
    for _ in range(count):
        ref = f"E2E-{tag}-{uuid.uuid4().hex}"
        body = payment_body(ref, now)
        headers = sign("standard", key, body, now=ts, delivery_id=f"msg_{uuid.uuid4().hex}")
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        reqs.append(
            (
                f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n{head}\r\n"
            ).encode()
            + body
        )
        refs.append(ref)
    return reqs, refs


def _pct(data: list[float], q: float) -> float:
    if not data:
        return float("nan")
    data = sorted(data)
    return round(data[min(len(data) - 1, int(q * len(data)))] * 1000, 1)


# -- the stack --------------------------------------------------------------------------------


@dataclass
class DevStack:
    """`paygate dev` as `make run` starts it, on free ports, in a private data dir."""

    code_dir: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="paygate-e2e-")))
    port: int = field(default_factory=free_port)
    pg_port: int = field(default_factory=free_port)
    redis_port: int = field(default_factory=free_port)
    kafka_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return EmbeddedPostgres(self.root / "postgres", self.pg_port).url

    @property
    def kafka(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    def key(self) -> bytes:
        return decode_secret("standard", (self.root / "dev-webhook-secret").read_text().strip())

    async def start(self) -> None:
        self.root.chmod(0o755)  # the embedded Postgres may run as its own user
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WEB_", "PAYGATE_"))}
        for name in ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "WEBHOOK_SECRET"):
            env.pop(name, None)
        env.update(
            PORT=str(self.port), PAYGATE_DATA_DIR=str(self.root), LOG_LEVEL="WARNING",
            EMBEDDED_PG_PORT=str(self.pg_port), EMBEDDED_REDIS_PORT=str(self.redis_port),
            EMBEDDED_KAFKA_PORT=str(self.kafka_port),
        )  # fmt: skip
        log = open(self.root / "paygate-dev.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "dev"], cwd=self.code_dir, env=env,
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 120
        async with aiohttp.ClientSession() as s:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"paygate dev exited: see {self.root}/paygate-dev.log")
                with contextlib.suppress(aiohttp.ClientError):
                    async with s.get(f"http://127.0.0.1:{self.port}/health/ready") as r:
                        if r.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError("paygate dev did not get ready")
                await asyncio.sleep(0.2)
        await asyncio.sleep(3.0)  # the other server processes finish starting

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 60)
            except TimeoutError:
                self.proc.kill()
        shutil.rmtree(self.root, ignore_errors=True)


class Consumer:
    def __init__(self, stack: DevStack) -> None:
        self.progress = stack.root / "consumer.count"
        self.out = stack.root / "consumer.json"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.e2e", "--consume", stack.kafka,
             str(self.progress), str(self.out)],
            cwd=Path(__file__).resolve().parents[1],
        )  # fmt: skip

    def count(self) -> int:
        try:
            return int(self.progress.read_text() or 0)
        except (OSError, ValueError):
            return 0

    def finish(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        data: dict[str, Any] = orjson.loads(self.out.read_bytes())
        return data


# -- phases ------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    result: Result
    refs: dict[bytes, str]  # raw request -> reference
    started_wall: float
    load_seconds: float
    drained_after: float  # seconds from the start until every ack was seen (or the cut-off)
    pending_at_cutoff: set[str]
    cpu: dict[str, Any]
    volume: dict[str, Any] | None = None
    horizon: dict[str, Any] | None = None


async def _settle(dsn: str) -> None:
    conn = await asyncpg.connect(dsn, command_timeout=600)
    try:
        await conn.execute(f"VACUUM (ANALYZE) {_HOT_TABLES}")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    await asyncio.sleep(2.0)  # its backend exits and is reaped before the phase's snapshot


async def pending_keys(conn: asyncpg.Connection, like: str) -> set[str]:
    """Keys of the events not yet published: in the event log past the lanes' cursors and
    in the outbox (this tree's schema), or in the outbox (a tree before the event log)."""
    if await conn.fetchval("SELECT to_regclass('payment_service.event_log') IS NOT NULL"):
        from gateway.db.event_log import queued_events_sql

        sql = f"SELECT key FROM ({queued_events_sql()}) q WHERE key LIKE $1"
    else:
        sql = "SELECT key FROM payment_service.outbox WHERE key LIKE $1"
    return {r["key"] for r in await conn.fetch(sql, like)}


async def _queue_reads(conn: asyncpg.Connection) -> int:
    await conn.execute("SELECT pg_stat_force_next_flush()")
    return int(await conn.fetchval(QUEUE_READS))


async def _hold_snapshot(dsn: str) -> asyncpg.Connection:
    """A session that takes a REPEATABLE READ snapshot and keeps it: the horizon stays."""
    holder = await asyncpg.connect(dsn)
    await holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    await holder.fetchval("SELECT count(*) FROM payment_service.payment_references /* holder */")
    return holder


async def _volume_marks(conn: asyncpg.Connection) -> tuple[dict[str, tuple[bool, int]], Any]:
    sizes = {r["relname"]: (r["is_index"], r["bytes"]) for r in await conn.fetch(_RELATIONS)}
    return sizes, await conn.fetchval("SELECT pg_current_wal_lsn()")


async def paygate_phase(
    name: str, stack: DevStack, procs: Processes, consumer: Consumer, expected_seen: int,
    *, rate: float, seconds: float, connections: int, count: int, volume: bool = False,
    hold: bool = False,
) -> Phase:  # fmt: skip
    host = f"127.0.0.1:{stack.port}"
    reqs, refs = signed_requests(host, stack.key(), count, name)
    by_raw = dict(zip(reqs, refs, strict=True))
    conn = await asyncpg.connect(stack.dsn)
    holder = await _hold_snapshot(stack.dsn) if hold else None
    sampler = HorizonSampler(stack.dsn)
    try:
        marks = await _volume_marks(conn) if volume else None
        reads_before = await _queue_reads(conn)
        sampler.start()
        before = procs.snapshot()
        started = time.time()
        t0 = time.monotonic()
        result = await run(f"http://{host}", reqs, rate=rate, seconds=seconds,
                           connections=connections, track=True)  # fmt: skip
        load_seconds = time.monotonic() - t0
        acked = len(result.acks or [])
        target = expected_seen + acked
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while consumer.count() < target and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        drained_after = time.monotonic() - t0
        after = procs.snapshot()
        horizon = await sampler.stop()
        if holder is not None:
            await holder.close()
            holder = None
        pending = await pending_keys(conn, f"E2E-{name}-%")
        await asyncio.sleep(1.5)  # the relay's backend reports its counters when idle
        reads = await _queue_reads(conn) - reads_before
        horizon["queue_index_tuples_read_per_event"] = round(reads / max(acked, 1), 1)
        vol = None
        if marks is not None:
            sizes_after, wal_after = await _volume_marks(conn)
            wal = float(await conn.fetchval("SELECT $1::pg_lsn - $2::pg_lsn", wal_after, marks[1]))
            created = max(1, result.statuses.get(201, 0))
            tables = indexes = 0.0
            by_relation: dict[str, float] = {}
            for rel, (is_index, size) in sizes_after.items():
                grown = (size - marks[0].get(rel, (is_index, 0))[1]) / created
                if grown >= 1:
                    by_relation[rel] = round(grown, 1)
                if is_index:
                    indexes += grown
                else:
                    tables += grown
            fpi = await wal_split.full_page_bytes(conn, marks[1], wal_after)
            vol = {
                "tables_B": round(tables), "indexes_B": round(indexes), "wal_B": round(wal / created),
                **({"wal_full_pages_B": round(fpi / created)} if fpi is not None else {}),
                "total_B": round(tables + indexes + wal / created), "by_relation": by_relation,
            }  # fmt: skip
    finally:
        if holder is not None:
            await holder.close()
        await sampler.stop()
        await conn.close()
    return Phase(
        name, result, by_raw, started, load_seconds, drained_after, pending,
        _cpu_per_payment(before, after, result.statuses.get(201, 0)), vol, horizon,
    )  # fmt: skip


async def drain_phase(
    stack: DevStack, procs: Processes, consumer: Consumer, expected_seen: int,
    *, count: int, connections: int,
) -> tuple[Phase, dict[str, Any]]:  # fmt: skip
    """The relay's own cost per published event, at full batches: with the workers
    process stopped (SIGSTOP), record `count` payments; then let it go and measure the
    CPU of the workers process and of the Postgres backends serving it until the
    consumer has seen them all."""
    workers = [p for p, _ in procs.groups()["relay+workers"]]
    if not workers:
        raise RuntimeError("no workers process: is the relay in a process of its own?")
    host = f"127.0.0.1:{stack.port}"
    reqs, refs = signed_requests(host, stack.key(), count, "drain")
    for w in workers:
        w.suspend()
    try:
        result = await run(f"http://{host}", reqs, rate=0, seconds=600,
                           connections=connections, track=True)  # fmt: skip
    finally:
        # The backlog appeared while the relay was frozen, which no relay sees in life: a
        # relay analyzes the outbox when it starts and after a full claim. Do it for it,
        # so the phase measures draining, not one claim planned for an empty table.
        conn = await asyncpg.connect(stack.dsn)
        try:
            await conn.execute("ANALYZE payment_service.outbox")
        finally:
            await conn.close()
        await asyncio.sleep(1.0)  # that backend is reaped before the snapshot
        before = procs.snapshot()
        for w in workers:
            w.resume()
    t0 = time.monotonic()
    acked = len(result.acks or [])
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while consumer.count() < expected_seen + acked and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    drained = time.monotonic() - t0
    after = procs.snapshot()
    conn = await asyncpg.connect(stack.dsn)
    try:
        pending = await pending_keys(conn, "E2E-drain-%")
    finally:
        await conn.close()
    used = {k: after[k] - before.get(k, 0.0) for k in after}
    relay = {
        "events": acked,
        "seconds": round(drained, 2),
        "events_per_s": round(acked / max(drained, 1e-9), 1),
        "relay_process_us_per_event": round(used["relay+workers"] / max(acked, 1) * 1e6, 1),
        "postgres_for_relay_us_per_event": round(
            used.get("pg:backend for relay+workers", 0.0) / max(acked, 1) * 1e6, 1
        ),
        "postgres_total_us_per_event": round(used["postgres"] / max(acked, 1) * 1e6, 1),
        "broker_us_per_event": round(used["broker"] / max(acked, 1) * 1e6, 1),
        "consumer_us_per_event": round(used["consumer"] / max(acked, 1) * 1e6, 1),
    }
    phase = Phase("drain", result, dict(zip(reqs, refs, strict=True)), time.time(), 0.0,
                  drained, pending, _cpu_per_payment(before, after, acked))  # fmt: skip
    return phase, relay


def account(phase: Phase, seen: dict[str, float]) -> dict[str, Any]:
    """The phase's figures, and whether every request is accounted for."""
    res = phase.result
    acks = res.acks or []
    acked_refs = {phase.refs[raw]: at for raw, at in acks}
    on_topic = {ref for ref in acked_refs if ref in seen}
    missing = set(acked_refs) - on_topic - phase.pending_at_cutoff
    completed = sum(res.statuses.values())
    refused = completed - len(acks)
    timed_out = res.sent - completed
    lags = [max(0.0, seen[ref] - at) for ref, at in acked_refs.items() if ref in seen]
    stray = {ref for ref in seen if ref.startswith(f"E2E-{phase.name}-")} - set(acked_refs)
    done = len(on_topic)
    return {
        "sent": res.sent,
        "acknowledged": len(acks),
        "refused": refused,
        "timed_out": timed_out,
        "statuses": dict(sorted(res.statuses.items())),
        "seen_on_topic": done,
        "queued_at_cutoff": len(phase.pending_at_cutoff),
        "unaccounted": len(missing),
        "on_topic_never_acked": len(stray),  # a 2xx lost by the generator, or a timed-out one
        "void": bool(missing) or res.sent != len(acks) + refused + timed_out,
        "load_seconds": round(phase.load_seconds, 2),
        "created_per_s": round(res.statuses.get(201, 0) / res.elapsed, 1),
        "done_per_s": round(done / max(phase.drained_after, 1e-9), 1),
        "drained_after_s": round(phase.drained_after, 2),
        "ack_p50_ms": round(res.percentile(0.5) * 1000, 1),
        "ack_p99_ms": round(res.percentile(0.99) * 1000, 1),
        "ack_p99_ms_by_10s": res.windows(),
        "publish_lag_p50_ms": _pct(lags, 0.5),
        "publish_lag_p99_ms": _pct(lags, 0.99),
        "publish_lag_max_ms": _pct(lags, 1.0),
        "publish_lag_p99_ms_by_10s": _lag_windows(acked_refs, seen, phase.started_wall),
        "cpu": phase.cpu,
        **({"horizon": phase.horizon} if phase.horizon else {}),
        **({"bytes_per_payment": phase.volume} if phase.volume else {}),
    }


def _lag_windows(acked: dict[str, float], seen: dict[str, float], start: float) -> list[float]:
    """Publish lag p99 (ms) of the payments acknowledged in each 10 s of the phase."""
    windows: dict[int, list[float]] = {}
    for ref, at in acked.items():
        if ref in seen:
            windows.setdefault(int((at - start) // 10), []).append(max(0.0, seen[ref] - at))
    return [_pct(windows[k], 0.99) for k in sorted(windows)]


async def duplicate_phase(
    stack: DevStack, procs: Processes, *, seconds: float, connections: int, count: int
) -> dict[str, Any]:
    """One delivery recorded once, then sent again `count` times in a closed loop, as a
    provider retrying it: what a duplicate costs."""
    host = f"127.0.0.1:{stack.port}"
    [raw], [ref] = signed_requests(host, stack.key(), 1, "duplicates")
    first = await run(f"http://{host}", [raw], rate=0, seconds=30, connections=1)
    before = procs.snapshot()
    res = await run(f"http://{host}", [raw] * count, rate=0, seconds=seconds,
                    connections=connections)  # fmt: skip
    after = procs.snapshot()
    s = res.summary()
    answered = sum(res.statuses.values())
    return {
        "reference": ref,
        "first": dict(first.statuses),
        "throughput_rps": s["throughput_rps"],
        "p50_ms": s["p50_ms"],
        "p99_ms": s["p99_ms"],
        "statuses": dict(sorted(res.statuses.items())),
        "errors": s["errors"],
        "cpu": _cpu_per_payment(before, after, answered),
    }


async def bare_phase(
    processes: int, key_secret: str, key: bytes, seconds: float, connections: int, count: int
) -> dict[str, Any]:
    port = free_port()
    host = f"127.0.0.1:{port}"
    argv = [sys.executable, "-m", "bench.bare", "--port", str(port), "--secret", key_secret]
    procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL) for _ in range(processes)]
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        reqs, _ = signed_requests(host, key, count, "bare")
        res = await run(f"http://{host}", reqs, rate=0, seconds=seconds, connections=connections)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(20)
    s = res.summary()
    return {k: s[k] for k in ("throughput_rps", "p50_ms", "p99_ms", "statuses", "errors")}


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} (uptime)"


def _code_revision(code_dir: Path) -> str:
    """The measured tree by commit, never by path: reports are committed and a path names
    one developer's machine."""
    try:
        out = subprocess.run(
            ["git", "-C", str(code_dir), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return out.stdout.strip()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"code": _code_revision(Path(args.code_dir)), "load_at_start": _load()}
    stack = DevStack(Path(args.code_dir).resolve())
    try:
        await stack.start()
        procs = Processes(psutil.Process(stack.proc.pid if stack.proc else 0))
        consumer = Consumer(stack)
        procs.consumer = psutil.Process(consumer.proc.pid)
        n = procs.server_processes
        report["server_processes"] = n
        secret = (stack.root / "dev-webhook-secret").read_text().strip()
        key = stack.key()
        ceiling_count = int(args.ceiling_seconds * args.max_rate)

        report["bare"] = await bare_phase(n, secret, key, args.ceiling_seconds,
                                          args.ceiling_connections, ceiling_count)  # fmt: skip
        print("bare", report["bare"], flush=True)
        report["bare_c64"] = await bare_phase(n, secret, key, args.ceiling_seconds,
                                              args.c64_connections, ceiling_count)  # fmt: skip
        print("bare_c64", report["bare_c64"], flush=True)

        phases: list[Phase] = []
        expected = 0
        plan = [
            ("ceiling", 0.0, args.ceiling_seconds, args.ceiling_connections, ceiling_count, False),
            ("c64", 0.0, args.ceiling_seconds, args.c64_connections, ceiling_count, False),
            ("sustained", args.rate, args.seconds, args.connections,
             int(args.rate * args.seconds), True),
        ]  # fmt: skip
        if args.hold_seconds:
            plan.append(("hold", args.rate, args.hold_seconds, args.connections,
                         int(args.rate * args.hold_seconds), False))  # fmt: skip
        for name, rate, seconds, conns, count, volume in plan:
            await _settle(stack.dsn)
            phase = await paygate_phase(
                name, stack, procs, consumer, expected, rate=rate, seconds=seconds,
                connections=conns, count=count, volume=volume, hold=name == "hold",
            )  # fmt: skip
            expected += len(phase.result.acks or [])
            phases.append(phase)
            print(name, phase.result.summary()["created_rps"], "created/s", flush=True)
        if args.duplicate_seconds:
            await _settle(stack.dsn)
            report["duplicates"] = await duplicate_phase(
                stack, procs, seconds=args.duplicate_seconds, connections=args.c64_connections,
                count=int(args.duplicate_seconds * args.max_rate),
            )  # fmt: skip
            print("duplicates", report["duplicates"]["throughput_rps"], "answered/s", flush=True)
        if args.drain_count and not procs.groups()["relay+workers"]:
            report["relay_drain"] = "skipped: the relay runs inside a server process"
        elif args.drain_count:
            await _settle(stack.dsn)
            phase, relay = await drain_phase(stack, procs, consumer, expected,
                                             count=args.drain_count, connections=64)  # fmt: skip
            expected += len(phase.result.acks or [])
            phases.append(phase)
            report["relay_drain"] = relay
            print("relay drain", relay, flush=True)
        data = consumer.finish()
        seen: dict[str, float] = data["seen"]
        report["topic_records"] = data["records"]
        report["topic_distinct_keys"] = len(seen)
        for phase in phases:
            report[phase.name] = account(phase, seen)
        bare = report["bare"]["throughput_rps"]
        bare64 = report["bare_c64"]["throughput_rps"]
        report["ratios"] = {
            "ceiling_done_vs_bare": round(report["ceiling"]["done_per_s"] / bare, 3),
            "ceiling_created_vs_bare": round(report["ceiling"]["created_per_s"] / bare, 3),
            "c64_done_vs_bare_c64": round(report["c64"]["done_per_s"] / bare64, 3),
            "c64_created_vs_bare_c64": round(report["c64"]["created_per_s"] / bare64, 3),
        }
        if "duplicates" in report:
            report["ratios"]["duplicates_vs_bare_c64"] = round(
                report["duplicates"]["throughput_rps"] / bare64, 3
            )
        report["load_at_end"] = _load()
    finally:
        await stack.stop()
    return report


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--consume":
        import uvloop

        uvloop.run(consume(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=5000, help="sustained open-loop rate")
    ap.add_argument("--seconds", type=float, default=60, help="sustained phase length")
    ap.add_argument("--connections", type=int, default=512, help="open-loop connections")
    ap.add_argument("--ceiling-seconds", type=float, default=15)
    ap.add_argument("--ceiling-connections", type=int, default=512)
    ap.add_argument("--c64-connections", type=int, default=64)
    ap.add_argument("--max-rate", type=float, default=25_000,
                    help="requests built per closed-loop second (an upper bound)")  # fmt: skip
    ap.add_argument("--code-dir", default=str(Path(__file__).resolve().parents[1]),
                    help="the source tree whose `paygate dev` runs (default: this one)")  # fmt: skip
    ap.add_argument("--drain-count", type=int, default=30_000,
                    help="payments queued with the workers process stopped, then drained "
                         "(the relay's cost per event at full batches); 0 to skip")  # fmt: skip
    ap.add_argument("--hold-seconds", type=float, default=60,
                    help="the horizon-hold phase's length (0 to skip)")  # fmt: skip
    ap.add_argument("--duplicate-seconds", type=float, default=15,
                    help="the duplicate-only phase's length (0 to skip)")  # fmt: skip
    ap.add_argument("--json", help="also write the report here")
    args = ap.parse_args()
    import uvloop

    report = uvloop.run(main_async(args))
    text = orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
