"""`make bench`: the hot-path figures of bench/RESULTS.md, all measured in one run.

Starts a private embedded stack, then, one server process at a time, on this machine:
  1. bare      aiohttp read + verify + parse (the framework's ceiling), closed loop
  2. naive     one transaction per request (bench/baseline), closed loop
  3. paygate   `paygate serve`, closed loop (ceiling) on new payments
  4. paygate   open loop at --rate for --seconds (the sustained target: p99, non-2xx)
  5. paygate   duplicate-only traffic (L1 hits), closed loop, repeating 20,000 payments
               of phase 4, after the database has finished the upkeep phase 4 left it
               (vacuum, checkpoint) and a 5 s unmeasured warm-up
and prints every figure with its ratio to the baselines of this same run.

The closed-loop phases (1, 2, 3, 5) run `--ceiling-connections` connections, the open
loop `--connections`. A closed loop only finds a ceiling if it keeps the server busy:
with one writer per process, a new payment waits for up to two commits (~17 ms each at
the ceiling), so 512 connections left the box ~7% idle for paygate. Paired
`bench.cpu_split` runs, 15 s, two processes: paygate 8.3k / 8.9k created/s at 512
against 10.3k / 10.1k at 1024; bare 18.5k against 18.6k req/s. Naive is bounded by its
transactions and is no faster with more connections.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.loadgen import Result, build_requests, run
from bench.stack import bench_stack
from workers.cli.devstack import free_port


async def _wait_http(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"server on {port} did not start")


class Server:
    """`copies` processes of one server on one port (SO_REUSEPORT); paygate starts its
    own siblings through WEB_CONCURRENCY instead."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int, copies: int = 1) -> None:
        self.argv, self.env, self.port, self.copies = argv, env, port, copies
        self.procs: list[subprocess.Popen[bytes]] = []

    async def __aenter__(self) -> Server:
        for _ in range(self.copies):
            self.procs.append(subprocess.Popen(self.argv, env=self.env, stdout=subprocess.DEVNULL))
        await _wait_http(self.port)
        # paygate starts its WEB_CONCURRENCY siblings after it listens: let them finish
        # starting (imports, cache warm-up) before anything is measured.
        await asyncio.sleep(4.0 if "serve" in self.argv else 0.3)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


WARM_UP_SECONDS = 5.0  # unmeasured duplicate traffic before phase 5
_HOT_TABLES = (
    "payment_service.payments, payment_service.payment_references, payment_service.outbox,"
    " payment_service.webhook_events, payment_service.audit_log"
)


async def _then_checkpoint(dsn: str, statement: str) -> None:
    """Run `statement` on the hot tables' database, then CHECKPOINT, so the next phase
    does not pay for the previous one's dirty buffers and WAL."""
    conn = await asyncpg.connect(dsn, command_timeout=300)
    try:
        await conn.execute(statement)
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def _truncate(dsn: str) -> None:
    await _then_checkpoint(dsn, f"TRUNCATE {_HOT_TABLES}")


async def _settle(dsn: str) -> None:
    """Finish the previous phase's database upkeep before the next phase is measured:
    the autovacuum and the WAL-triggered checkpoint that 300,000 new payments start
    otherwise run on the same two cores through the duplicate phase, which never
    touches Postgres (measured: 0.68 of bare right after the sustained phase, 0.80-0.84
    on a quiet stack with `bench.cpu_split --mode dup`)."""
    await _then_checkpoint(dsn, f"VACUUM (ANALYZE) {_HOT_TABLES}")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with bench_stack("paygate-bench-", kafka=True) as stack:
        pg, key, secret = stack.pg, stack.key, stack.secret
        env = stack.server_env(WEB_CONCURRENCY=str(args.processes))
        py = sys.executable
        ceiling_s, conns = args.ceiling_seconds, args.connections
        closed_conns = args.ceiling_connections or conns

        async def closed(port: int, reqs: list[bytes]) -> Result:
            return await run(f"http://127.0.0.1:{port}", reqs, rate=0, seconds=ceiling_s,
                             connections=closed_conns)  # fmt: skip

        n_ceiling = int(args.max_rps * ceiling_s)
        port = free_port()
        reqs = build_requests(f"127.0.0.1:{port}", n_ceiling, key, dup_ratio=0)
        async with Server(
            [py, "-m", "bench.bare", "--port", str(port), "--secret", secret],
            env,
            port,
            args.processes,
        ):
            results["bare"] = (await closed(port, reqs)).summary()
        print("bare", results["bare"], flush=True)

        port = free_port()
        reqs = build_requests(f"127.0.0.1:{port}", n_ceiling, key, dup_ratio=0)
        naive = [py, "-m", "bench.baseline.naive", "--port", str(port), "--secret", secret,
                 "--dsn", pg.url]  # fmt: skip
        async with Server(naive, env, port, args.processes):
            results["naive"] = (await closed(port, reqs)).summary()
        print("naive", results["naive"], flush=True)
        await _truncate(pg.url)

        port = free_port()
        env_pg = dict(env, PORT=str(port))
        serve = [py, "-m", "workers.cli", "serve"]
        reqs = build_requests(f"127.0.0.1:{port}", n_ceiling, key, dup_ratio=0)
        async with Server(serve, env_pg, port):
            results["paygate_ceiling"] = (await closed(port, reqs)).summary()
        print("paygate ceiling", results["paygate_ceiling"], flush=True)
        await _truncate(pg.url)

        port = free_port()
        env_pg = dict(env, PORT=str(port))
        reqs = build_requests(f"127.0.0.1:{port}", int(args.rate * args.seconds), key, dup_ratio=0)
        async with Server(serve, env_pg, port):
            results["paygate_sustained"] = (
                await run(
                    f"http://127.0.0.1:{port}",
                    reqs,
                    rate=args.rate,
                    seconds=args.seconds,
                    connections=conns,
                )
            ).summary()
            results["paygate_sustained"]["target_rps"] = args.rate
            print("paygate sustained", results["paygate_sustained"], flush=True)
            # The last payments of phase 4 are the ones still in the processes' memory;
            # a warm-up lets each process meet the ones the other one recorded, so the
            # measured traffic is the memory-hit path it is meant to be.
            seed = reqs[-20_000:]
            dups = build_requests(f"127.0.0.1:{port}", n_ceiling, key, dup_ratio=0, seed_refs=seed)
            await _settle(pg.url)
            await run(f"http://127.0.0.1:{port}", dups, rate=0, seconds=WARM_UP_SECONDS,
                      connections=closed_conns)  # fmt: skip
            results["paygate_duplicates"] = (await closed(port, dups)).summary()
        print("paygate duplicates", results["paygate_duplicates"], flush=True)
    return results


def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    bare = r["bare"]["throughput_rps"]
    naive = r["naive"]["created_rps"]
    ceil = r["paygate_ceiling"]["created_rps"]
    sus = r["paygate_sustained"]
    dup = r["paygate_duplicates"]["throughput_rps"]
    non2xx = sum(v for k, v in sus["statuses"].items() if not 200 <= int(k) < 300) + sus["errors"]
    lines = [
        "| figure | value | baseline ratio |",
        "|---|---|---|",
        f"| bare ceiling (read+verify+parse) | {bare:,.0f} req/s | 1.00 (the baseline) |",
        f"| naive baseline (txn per request) | {naive:,.0f} created/s | {naive / bare:.2f} of bare |",
        f"| paygate ceiling, new payments | {ceil:,.0f} created/s | {ceil / bare:.2f} of bare, {ceil / naive:.1f}x naive |",
        f"| paygate sustained {args.seconds:.0f} s at {args.rate:,.0f}/s | {sus['created_rps']:,.0f} created/s, p50 {sus['p50_ms']} ms, p95 {sus['p95_ms']} ms, p99 {sus['p99_ms']} ms, max {sus['max_ms']} ms, non-2xx {non2xx} | {sus['created_rps'] / bare:.2f} of bare, {sus['created_rps'] / naive:.1f}x naive |",
        f"| paygate duplicate-only (L1 hits) | {dup:,.0f} req/s | {dup / bare:.2f} of bare |",
    ]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=5000)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--ceiling-seconds", type=float, default=15)
    ap.add_argument("--connections", type=int, default=64, help="the open-loop run's connections")
    ap.add_argument("--ceiling-connections", type=int, default=0,
                    help="the closed-loop phases' connections (default: --connections)")  # fmt: skip
    ap.add_argument("--max-rps", type=float, default=25_000, help="sizes the pre-built requests")
    ap.add_argument("--processes", type=int, default=1, help="server processes for every server")
    args = ap.parse_args()
    import uvloop

    results = uvloop.run(main_async(args))
    out = Path("bench/out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "hotpath.json").write_bytes(
        orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    )
    print(report(results, args))


if __name__ == "__main__":
    main()
