"""How paygate's costs grow with its tables: every figure at steps of table size, with its
ratio to the empty step of the same run.

    python -m bench.scale                                  # 0, 1M, 5M, 20M payments
    python -m bench.scale --steps 0,200000,1000000 --seconds 10
    python -m bench.scale --chart-only bench/out/scale.json --chart docs/scaling-growth.png

A private embedded stack (its folder under bench/out/, deleted at the end) is filled
with synthetic history through COPY (bench/scale_fill.py: 13 months of payments,
references for the TTL, deliveries for their retention, audit rows). At each step, the
history is topped up to the step's count and one statement day of payments is added;
then, with a fresh `paygate serve` (one process) on the filled tables (bench/scale_measure.py):

- recording: CPU per payment (server and Postgres) and p99, closed loop, new references;
- duplicates of old references (L1 and L2 cold, so Postgres answers): p99;
- the ops API and console (bench.ops's set): p95 of each, worst search, worst timeline;
- statement reconciliation of the statement day (`--statement-rows`, 100,000);
- pruning a day of expired references (`--prune-rows`, 864,000: a day at 10/s) by the
  partition worker, with recording at `--rate` meanwhile: time, WAL, recording p99;
- partition maintenance (premake, DEFAULT moves, detach, detach and drop of the month
  past retention), with recording at `--rate`: time, recording p99, longest lock wait;
- table and index bytes per payment; autovacuum's lag at the end of the step.

Before each step the free disk is checked: the step is filled only if the bench's data
stays under 70% of the space it can use (its own data plus what is free); otherwise the
bench says what the step needs and stops at the last step that fitted. Results go to
`--json` (bench/out/scale.json) and a chart to `--chart` (bench/out/scale.png).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench import scale_fill as fill
from bench import scale_measure as measure
from bench.ops import SECRET as OPS_SECRET
from bench.run_all import Server
from bench.stack import BenchStack, bench_stack
from gateway.db.pool import create_pool
from workers.cli.devstack import free_port
from workers.partitions import ensure_partitions

DISK_SHARE = 0.7
FIRST_GUESS_BYTES = 2500  # per payment, before a step has measured it
WAL_ROOM = 3 * 2**30  # max_wal_size plus what a checkpoint cycle leaves behind
PG_SETTINGS = ("shared_preload_libraries=pg_stat_statements", "track_io_timing=on")
DEFAULT_STEPS = "0,1000000,5000000,20000000"


@dataclass
class StepResult:
    history: int  # history payments asked for
    payments: int  # payments in the table when measured (history, plants, recorded)
    figures: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)


def du(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except OSError:
                continue
    return total


def disk_room(root: Path, needed: int) -> tuple[bool, str]:
    """Whether `needed` more bytes keep the bench under DISK_SHARE of the space it can
    use (its own data plus the free space), and the figures that decided it."""
    st = os.statvfs(root)
    free = st.f_bavail * st.f_frsize
    ours = du(root)
    usable = free + ours
    ok = ours + needed <= DISK_SHARE * usable
    gib = 2**30
    return ok, (
        f"needs ~{needed / gib:.1f} GiB more; the bench holds {ours / gib:.1f} GiB, "
        f"{free / gib:.1f} GiB free: {(ours + needed) / gib:.1f} of {usable / gib:.1f} GiB "
        f"({100 * (ours + needed) / usable:.0f}%, limit {100 * DISK_SHARE:.0f}%)"
    )


async def _ensure_history_partitions(stack: BenchStack, history: fill.History) -> None:
    """Partitions for every month of the history, the one past retention included."""
    settings = stack.settings().replace(partition_retention_months=history.payments_months + 1)
    pool = await create_pool(settings, min_size=1, max_size=2)
    try:
        await ensure_partitions(pool, settings)
    finally:
        await pool.close()


async def _prepare(conn: asyncpg.Connection, stack: BenchStack, history: fill.History) -> None:
    await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    # Installed when the history starts, so the server-clock tables get those months too.
    await conn.execute(
        "UPDATE payment_service.schema_migrations SET applied_at = $1", history.first_month.start
    )


async def run_step(
    args: argparse.Namespace,
    stack: BenchStack,
    conn: asyncpg.Connection,
    history: fill.History,
    index: int,
    target: int,
) -> StepResult:
    began = time.monotonic()
    await _ensure_history_partitions(stack, history)
    written = await fill.fill_history(conn, history, target, seed=index + 1)
    day = history.statement_day(index)
    statement = await fill.fill_day(
        conn,
        history,
        day,
        args.statement_rows,
        seed=500 + index,
        customers=max(target, args.statement_rows) // 20,
    )
    filled = time.monotonic() - began
    print(f"  filled {written:,} history payments and a statement day in {filled:.0f} s",
          flush=True)  # fmt: skip
    await conn.execute("VACUUM ANALYZE")
    await conn.execute("CHECKPOINT")
    payments, figures = await measure.sizes(conn)
    details: dict[str, Any] = {"fill_seconds": filled, "load_before": os.getloadavg()[0]}
    port = free_port()
    env = stack.server_env(PORT=str(port), WEB_CONCURRENCY="1", ADMIN_JWT_SECRET=OPS_SECRET)
    async with Server([sys.executable, "-m", "workers.cli", "serve"], env, port) as server:
        step = measure.Step(
            stack, history, server, port, args.seconds, args.connections, args.rate,
            args.duplicates, args.ops_requests, index,
        )  # fmt: skip
        await conn.execute("SELECT pg_stat_statements_reset()")
        figures |= await _timed("recording", lambda: measure.recording(step), details)
        details["statements: recording"] = await measure.top_statements(conn)
        figures |= await _timed("duplicates", lambda: measure.duplicates(step, conn), details)
        details["statements: duplicates"] = await measure.top_statements(conn)
        scratch = Path(tempfile.mkdtemp(dir=stack.root))
        await conn.execute("SELECT pg_stat_statements_reset()")
        figures |= await _timed("ops", lambda: measure.ops_latency(step, conn), details)
        details["statements: ops"] = await measure.top_statements(conn, 12)
        for name, job in (
            ("reconciliation", lambda: measure.reconciliation(step, statement, scratch)),
            ("recording, quiet", lambda: measure.quiet_p99(step)),
            ("pruning", lambda: measure.pruning(step, conn, args.prune_rows)),
            ("maintenance", lambda: measure.maintenance(step, conn, args.default_rows)),
        ):
            figures |= await _timed(name, job, details)
    figures |= await measure.autovacuum(conn)
    details["load_after"] = os.getloadavg()[0]
    details["step_seconds"] = time.monotonic() - began
    return StepResult(target, payments, figures, details)


async def _timed(name: str, job: Any, details: dict[str, Any]) -> dict[str, float]:
    """Run one measurement; note how long it took and the machine's load meanwhile."""
    began = time.monotonic()
    out: dict[str, float] = await job()
    took, load = time.monotonic() - began, os.getloadavg()[0]
    details[f"phase: {name}"] = {"seconds": round(took, 1), "load_1min": load}
    print(f"  {name}: {took:.0f} s, load average {load:.1f}", flush=True)
    return out


def _growth_estimate(results: list[StepResult], used: int) -> float:
    """Bytes on disk per history payment so far (a first guess before any step)."""
    filled = [r for r in results if r.history > 0]
    if not filled:
        return FIRST_GUESS_BYTES
    return max(FIRST_GUESS_BYTES / 2, used / filled[-1].payments)


async def main_async(args: argparse.Namespace) -> list[StepResult]:
    steps = [int(s) for s in args.steps.split(",")]
    out_dir = Path(args.out)
    results: list[StepResult] = []
    now = datetime.now(UTC)
    async with bench_stack("scale-", parent=out_dir, pg_settings=PG_SETTINGS) as stack:
        defaults = stack.settings()
        history = fill.History(
            now, defaults.partition_retention_months, defaults.webhook_events_retention_months,
            defaults.reference_cache_ttl_days,
        )  # fmt: skip
        conn = await asyncpg.connect(stack.pg.url, command_timeout=None)
        try:
            await _prepare(conn, stack, history)
            for index, target in enumerate(steps):
                per_payment = _growth_estimate(results, du(stack.root))
                grow = max(0, target - (results[-1].history if results else 0))
                needed = int((grow + args.statement_rows + 100_000) * per_payment) + WAL_ROOM
                ok, note = disk_room(stack.root, needed)
                print(f"step {index}: {target:,} payments of history; {note}", flush=True)
                if not ok:
                    print(f"step {index} does not fit under {100 * DISK_SHARE:.0f}% of the "
                          "disk: stopping at the last step that fitted", flush=True)  # fmt: skip
                    break
                results.append(await run_step(args, stack, conn, history, index, target))
                report(results)
                save(results, Path(args.json), args)
        finally:
            await conn.close()
    return results


def _ratio_base(name: str, results: list[StepResult]) -> StepResult:
    """Bytes per payment are compared with the first filled step (an empty table's
    bytes per payment measures its fixed overhead); everything else with step 0."""
    if name.startswith("bytes/payment"):
        return next((r for r in results if r.history > 0), results[0])
    return results[0]


def _has_ratio(name: str) -> bool:
    """Autovacuum's lag is a state, not a cost: compared by value, not as a ratio."""
    return not name.startswith("autovacuum")


def report(results: list[StepResult]) -> None:
    head = " | ".join(f"{r.payments:,} payments" for r in results)
    print(f"\n| figure | {head} |\n|---|{'---:|' * len(results)}")
    for name in results[-1].figures:
        base = _ratio_base(name, results).figures.get(name)
        cells = []
        for r in results:
            value = r.figures.get(name)
            if value is None:
                cells.append("")
                continue
            ratio = f" ({value / base:.2f}x)" if base and _has_ratio(name) else ""
            cells.append(f"{value:,.1f}{ratio}")
        print(f"| {name} | {' | '.join(cells)} |")
    print(flush=True)


def save(results: list[StepResult], path: Path, args: argparse.Namespace) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "command": " ".join(sys.argv),
        "cpus": os.cpu_count(),
        "steps": [r.__dict__ for r in results],
        "args": vars(args),
    }
    path.write_text(json.dumps(doc, indent=1, default=str))


def load(path: Path) -> list[StepResult]:
    return [StepResult(**s) for s in json.loads(path.read_text())["steps"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", default=DEFAULT_STEPS, help="history payments, comma-separated")
    ap.add_argument("--seconds", type=float, default=20, help="closed-loop recording run")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rate", type=float, default=300,
                    help="open-loop recording rate while pruning and maintenance run")  # fmt: skip
    ap.add_argument(
        "--duplicates", type=int, default=20000, help="old references sent again (~10 s)"
    )
    ap.add_argument("--ops-requests", type=int, default=100, help="per ops endpoint")
    ap.add_argument("--statement-rows", type=int, default=100_000)
    ap.add_argument("--prune-rows", type=int, default=864_000)
    ap.add_argument("--default-rows", type=int, default=10_000,
                    help="payments waiting in DEFAULT for their month")  # fmt: skip
    ap.add_argument("--out", default="bench/out", help="where the stack's folder goes")
    ap.add_argument("--json", default="bench/out/scale.json")
    ap.add_argument("--chart", default="bench/out/scale.png")
    ap.add_argument("--chart-only", default="", metavar="JSON", help="redraw from a run's JSON")
    args = ap.parse_args()
    from bench.scale_chart import draw

    if args.chart_only:
        draw(load(Path(args.chart_only)), Path(args.chart))
        return
    load_before = os.getloadavg()
    results = asyncio.run(main_async(args))
    if results:
        report(results)
        draw(results, Path(args.chart))
        print(f"chart: {args.chart}; figures: {args.json}")
    print(f"load average (1 min): {load_before[0]:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end; {os.cpu_count()} CPUs")  # fmt: skip


if __name__ == "__main__":
    main()
