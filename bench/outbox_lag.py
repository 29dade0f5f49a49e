"""Outbox relay bench: does the relay keep up with the hot path, and how long does an
event take from the payment's commit to the broker's acknowledgement?

Drives new signed payments at a fixed rate (open loop, bench/loadgen.py) for N seconds
with the relay running, samples the outbox depth every 100 ms, waits for the outbox to
drain, then reports commit -> ack lag percentiles and the maximum depth. Target (issue
4): depth stays bounded and p99 lag <= 250 ms at the hot path's sustained rate.

    python -m bench.outbox_lag --rate 5000 --seconds 60             # `paygate run` child
    python -m bench.outbox_lag --rate 1000 --seconds 10 --mode inprocess
    python -m bench.outbox_lag --url http://127.0.0.1:3004 --database-url postgresql://... \
        --secret-file .paygate/dev-webhook-secret --rate 5000 --seconds 60

Modes:
  process    (default) a private embedded stack and a `paygate run` child process with
             only the outbox relay enabled (the production single-process shape); lag
             from its `paygate_outbox_publish_lag_seconds` histogram (percentiles
             interpolated inside buckets; `le_250ms` is exact, 0.25 being a bound).
  inprocess  the app and the relay in this process (shares the CPU with the load
             generator); lag exact, from every acknowledged row.
  --url      an already running server (with its relay); lag from its /metrics, depth
             from --database-url when given.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench.loadgen import build_requests, run
from bench.stack import bench_stack
from gateway.ingest.signatures import decode_secret
from workers.cli.devstack import free_port

LAG_METRIC = "paygate_outbox_publish_lag_seconds"
PUBLISH_METRIC = "paygate_kafka_publish"
DRAIN_TIMEOUT = 120.0


@dataclass
class Depth:
    samples: list[int] = field(default_factory=list)

    async def sample(self, dsn: str, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            while not stop.is_set():
                self.samples.append(
                    await conn.fetchval(
                        "SELECT pending FROM payment_service.events_pending(1000000)"
                    )
                )
                try:
                    await asyncio.wait_for(stop.wait(), 0.1)
                except TimeoutError:
                    pass
        finally:
            await conn.close()


def exact_percentiles(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"events": 0}
    data = sorted(values)

    def pct(q: float) -> float:
        return round(data[min(len(data) - 1, int(q * len(data)))] * 1000, 2)

    return {
        "events": len(data),
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": round(data[-1] * 1000, 2),
        "le_250ms": round(sum(1 for v in data if v <= 0.25) / len(data), 5),
    }


def scrape(text: str) -> tuple[dict[float, float], dict[str, float]]:
    """Cumulative lag buckets (le -> count) and publish counters (result -> count)."""
    buckets: dict[float, float] = {}
    publish: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == f"{LAG_METRIC}_bucket":
                buckets[float(s.labels["le"])] = s.value
            elif s.name == f"{PUBLISH_METRIC}_total":
                publish[s.labels["result"]] = s.value
    return buckets, publish


def histogram_percentiles(before: dict[float, float], after: dict[float, float]) -> dict[str, Any]:
    bounds = sorted(after)
    cum = [after[b] - before.get(b, 0.0) for b in bounds]
    total = cum[-1] if cum else 0.0
    if total <= 0:
        return {"events": 0}

    def pct(q: float) -> str | float:
        target = q * total
        prev_bound, prev_cum = 0.0, 0.0
        for bound, c in zip(bounds, cum, strict=True):
            if c >= target:
                if bound == float("inf"):
                    return f">{prev_bound * 1000:g}"
                share = (target - prev_cum) / (c - prev_cum) if c > prev_cum else 1.0
                return round((prev_bound + share * (bound - prev_bound)) * 1000, 2)
            prev_bound, prev_cum = bound, c
        return float("nan")

    le_250 = next((c for b, c in zip(bounds, cum, strict=True) if b == 0.25), 0.0)
    return {
        "events": int(total),
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "le_250ms": round(le_250 / total, 5),
        "note": "interpolated within histogram buckets",
    }


async def fetch_metrics(base_url: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(f"{base_url}/metrics") as r:
        r.raise_for_status()
        return await r.text()


async def wait_drained(dsn: str, timeout: float = DRAIN_TIMEOUT) -> float:
    """Seconds until the outbox is empty after the load stopped."""
    started = time.monotonic()
    conn = await asyncpg.connect(dsn)
    try:
        while time.monotonic() - started < timeout:
            left = await conn.fetchval(
                "SELECT pending FROM payment_service.events_pending(1000000)"
            )
            if left == 0:
                return round(time.monotonic() - started, 2)
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    return float("nan")


async def _wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            try:
                async with s.get(f"{url}/health/live") as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up")
            await asyncio.sleep(0.2)


async def drive(
    url: str, key: bytes, dsn: str | None, args: argparse.Namespace
) -> tuple[dict[str, Any], list[int], float]:
    """The open-loop load with depth sampling; returns (load summary, depths, drain s)."""
    reqs = build_requests(urlsplit(url).netloc, int(args.rate * args.seconds), key, dup_ratio=0)
    depth, stop = Depth(), asyncio.Event()
    sampler = asyncio.create_task(depth.sample(dsn, stop)) if dsn else None
    load = await run(url, reqs, rate=args.rate, seconds=args.seconds, connections=args.connections)
    drain = await wait_drained(dsn) if dsn else float("nan")
    stop.set()
    if sampler is not None:
        await sampler
    return load.summary(), depth.samples, drain


async def bench_process(args: argparse.Namespace) -> dict[str, Any]:
    async with bench_stack("paygate-outbox-bench-", kafka=True) as stack:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = stack.server_env(
            PORT=str(port), ENABLE_OUTBOX_RELAY="true", ENABLE_METRICS="true",
            WEB_CONCURRENCY=str(args.processes),
        )  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "run"], env=env, stdout=subprocess.DEVNULL
        )
        try:
            await _wait_http(url)
            await asyncio.sleep(0.5)  # cache warm-up and workers start around listening
            return await _measure_remote(url, stack.key, stack.pg.url, args)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _measure_remote(
    url: str, key: bytes, dsn: str | None, args: argparse.Namespace
) -> dict[str, Any]:
    before, pub_before = scrape(await fetch_metrics(url))
    load, depths, drain = await drive(url, key, dsn, args)
    if not dsn:
        await asyncio.sleep(2.0)  # no database to watch: give the relay a moment
    after, pub_after = scrape(await fetch_metrics(url))
    return {
        "load": load,
        "lag": histogram_percentiles(before, after),
        "published": {k: v - pub_before.get(k, 0.0) for k, v in pub_after.items()},
        "max_outbox_depth": max(depths, default=None),
        "drain_seconds_after_load": drain,
    }


async def bench_inprocess(args: argparse.Namespace) -> dict[str, Any]:
    from aiohttp import web

    from gateway import appkeys
    from gateway.app import create_app
    from workers.outbox import OutboxRelay

    async with bench_stack("paygate-outbox-bench-", kafka=True) as stack:
        port = free_port()
        settings = stack.settings().replace(port=port)
        app = create_app(settings)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        relay = OutboxRelay(app[appkeys.POOL], settings, app[appkeys.OUTBOX_WAKE])
        lags: list[float] = []
        relay.lag_observers.append(lags.append)
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
            await relay.start()
            url = f"http://127.0.0.1:{port}"
            load, depths, drain = await drive(url, stack.key, settings.database_url, args)
        finally:
            await relay.stop()
            await runner.cleanup()
        return {
            "load": load,
            "lag": exact_percentiles(lags),
            "max_outbox_depth": max(depths, default=None),
            "drain_seconds_after_load": drain,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000.0, help="new payments per second")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument(
        "--processes", type=int, default=1, help="server processes (the relay runs in the first)"
    )
    ap.add_argument("--mode", choices=("process", "inprocess"), default="process")
    ap.add_argument("--url", default="", help="an already running server (skips --mode)")
    ap.add_argument("--database-url", default=os.environ.get("DATABASE_URL", ""))
    ap.add_argument("--secret-file", default=".paygate/dev-webhook-secret")
    args = ap.parse_args()
    if args.url:
        with open(args.secret_file) as f:
            key = decode_secret("standard", f.read().strip())
        coro = _measure_remote(args.url.rstrip("/"), key, args.database_url or None, args)
    elif args.mode == "inprocess":
        coro = bench_inprocess(args)
    else:
        coro = bench_process(args)
    try:
        import uvloop

        result = uvloop.run(coro)
    except ImportError:
        result = asyncio.run(coro)
    result["command"] = "python -m bench.outbox_lag " + " ".join(sys.argv[1:])
    result["target"] = {"rate": args.rate, "seconds": args.seconds, "p99_lag_ms_max": 250}
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())


if __name__ == "__main__":
    main()
