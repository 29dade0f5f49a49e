"""Where the CPU goes per request: server, Postgres, Redis and the load generator.

On a 2-core machine that also runs the database and the generator, throughput swings
with whatever else runs; CPU time per request does not. This runs one closed-loop load
against `paygate serve` on a private embedded stack and divides each process tree's
CPU time (from /proc) by the requests answered:

    python -m bench.cpu_split --mode new --seconds 15 --processes 1
    python -m bench.cpu_split --mode dup --seconds 15 --py-spy bench/out/dup.svg
    python -m bench.cpu_split --mode new --rate 4000 --processes 2   # open loop

`--py-spy FILE` also records a flame graph of the first server process (needs py-spy).
`--timeline` prints the writer's commit time, batch size and server latency every 5 s
and the run's WAL flushes (bench/write_timeline.py); `--waits` prints, per second, the
oldest running statement, the host's dirty page cache and what slow statements waited
on (bench/pg_waits.py); `--env NAME=VALUE` sets server configuration and
`--pg-set name=value` a Postgres setting, for A/B runs:

    python -m bench.cpu_split --mode new --rate 5000 --processes 2 --connections 512 \
        --seconds 30 --timeline --env WRITE_CONCURRENCY=3
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

from bench.loadgen import run
from bench.pg_waits import WaitSampler
from bench.run_all import Server
from bench.stack import bench_stack, mode_requests
from bench.write_timeline import Timeline, reset_wal_stats, set_postgres, wal_summary
from workers.cli.devstack import free_port

_TICK = os.sysconf("SC_CLK_TCK")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def tree_cpu_seconds(root: int) -> float:
    """user+system CPU of a process and all its live descendants."""
    tree, total, todo = _children(), 0.0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(tree.get(pid, ()))
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def _py_spy() -> str:
    return shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))


def self_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


async def main_async(args: argparse.Namespace) -> None:
    async with bench_stack("paygate-cpu-") as stack:
        pg, rd = stack.pg, stack.redis
        if args.pg_set:
            await set_postgres(pg.url, args.pg_set)
        port = free_port()
        extra = dict(pair.split("=", 1) for pair in args.env)
        env = stack.server_env(WEB_CONCURRENCY=str(args.processes), PORT=str(port), **extra)
        host = f"127.0.0.1:{port}"
        seed, reqs = mode_requests(host, args.mode, int((args.rate or 30_000) * args.seconds),
                                   stack.key)  # fmt: skip
        url = f"http://{host}"
        argv = [sys.executable, "-m", "workers.cli", "serve"]
        if args.mode == "bare":  # the framework's ceiling, for comparison
            argv = [sys.executable, "-m", "bench.bare", "--port", str(port), "--secret",
                    stack.secret]  # fmt: skip
        copies = args.processes if args.mode == "bare" else 1  # serve forks its own
        async with Server(argv, env, port, copies) as server:
            if seed:
                await run(url, seed, rate=0, seconds=60, connections=args.connections)
            serve_pid = server.procs[0].pid
            assert pg.proc is not None and rd.proc is not None
            spy = None
            if args.py_spy:
                spy = subprocess.Popen(
                    [_py_spy(), "record", "-p", str(serve_pid), "-o", args.py_spy, "-r", "250",
                     "-d", str(int(args.seconds)), "--nonblocking",
                     "-f", "raw" if args.py_spy.endswith(".txt") else "flamegraph"],
                    stdout=subprocess.DEVNULL,
                )  # fmt: skip
            if args.timeline:
                await set_postgres(pg.url, ["track_wal_io_timing=on"])
                await reset_wal_stats(pg.url)
            timeline = Timeline(url) if args.timeline and args.mode != "bare" else nullcontext()
            servers = [p.pid for p in server.procs]

            def cpu() -> list[float]:
                assert pg.proc is not None and rd.proc is not None
                return [sum(tree_cpu_seconds(p) for p in servers),
                        tree_cpu_seconds(pg.proc.pid), tree_cpu_seconds(rd.proc.pid)]  # fmt: skip

            before = cpu()
            me = self_cpu_seconds()
            waits = WaitSampler(pg.url) if args.waits else nullcontext()
            async with waits:
                with timeline:
                    res = await run(url, reqs, rate=args.rate, seconds=args.seconds,
                                    connections=args.connections)  # fmt: skip
            after = cpu()
            me = self_cpu_seconds() - me
            if spy is not None:
                spy.wait()
            wal = await wal_summary(pg.url) if args.timeline else None
        summary = res.summary()
        done = int(summary["completed"])  # type: ignore[call-overload]
        print(summary)
        names = ("server", "postgres", "redis")
        for name, b, a in zip(names, before, after, strict=True):
            print(f"{name:9} {1e6 * (a - b) / done:7.1f} µs/request")
        print(f"{'loadgen':9} {1e6 * me / done:7.1f} µs/request")
        if wal:
            print("WAL flushed by the committing backends during the run:", wal)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mode", choices=("new", "dup", "bare"), default="new")
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--connections", type=int, default=256)
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument("--rate", type=float, default=0, help="open loop at this rate; 0 = closed")
    ap.add_argument("--py-spy", default="", help="write a flame graph of the server here")
    ap.add_argument("--timeline", action="store_true", help="writer and WAL figures as it runs")
    ap.add_argument("--waits", action="store_true",
                    help="per second: oldest statement, dirty pages, slow statements' waits")  # fmt: skip
    ap.add_argument("--env", nargs="*", default=[], metavar="NAME=VALUE",
                    help="server configuration")  # fmt: skip
    ap.add_argument("--pg-set", nargs="*", default=[], metavar="name=value",
                    help="Postgres settings (ALTER SYSTEM; reloadable ones only)")  # fmt: skip
    args = ap.parse_args()
    import uvloop

    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
