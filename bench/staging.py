"""Staging ingestion bench: end-to-end StagingWorker throughput against a raw COPY.

    python -m bench.staging --rows 1000000 [--batch-size 5000] [--workers 2]
                            [--postgres embedded|debian|both|debian,embedded]

Starts its own embedded Postgres in a temp dir (or uses DATABASE_URL: it truncates the
payment tables there, so never point it at data you care about), migrates, creates the
partitions, and COPYs N staging rows (payment dates spread over the last 3 months).

(a) Baseline: the same rows, already encoded (COPY ... TO a binary file beforehand),
    COPYed into `payments` - no validation, no dedup, no outbox: the ceiling for
    putting these rows into that table. Then `payments` is truncated.
(b) End to end: `--workers` StagingWorkers (each its own connection, SKIP LOCKED
    shares the backlog) run `burst()` until the staging table is drained: validation,
    dedup against payment_references, payments + outbox + audit, marking rows, logs.

`--postgres both` measures on the embedded PostgreSQL 18 and then on Debian's 15, each a
fresh server, and adds a table of the two side by side.

Prints a Markdown block for bench/RESULTS.md: both rates, their ratio, and this
process's RSS at start, middle and end of (b). Writes nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from bench.procstats import rss_mib
from gateway.config import Settings
from gateway.db.migrations import migrate
from gateway.db.pool import create_pool
from gateway.notify import Wakeup
from workers.cli.devstack import DEBIAN_POSTGRES_15, EmbeddedPostgres
from workers.partitions import ensure_partitions
from workers.staging import StagingWorker

STAGING_COLUMNS = (
    "reference_number", "loan_account_number", "cif", "amount", "payment_date",
    "payment_channel", "metadata",
)  # fmt: skip
PAYMENT_COLUMNS = (
    "id", "reference_number", "loan_account_number", "cif", "amount", "payment_date",
    "payment_channel", "source", "metadata",
)  # fmt: skip
CHANNELS = ("bank_transfer", "card", "branch", "mobile")


def staging_rows(n: int, seed: int = 4) -> Iterator[tuple[Any, ...]]:
    """Deterministic rows, generated lazily so memory does not grow with N."""
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(tzinfo=None)
    span = 89 * 86400
    for i in range(n):
        yield (
            f"STG-{i:010d}",
            f"LA-{rng.randrange(10**8):08d}",
            f"CIF-{rng.randrange(10**8):08d}",
            Decimal(rng.randrange(100, 10**7)).scaleb(-2),
            now - timedelta(seconds=rng.randrange(span)),
            CHANNELS[i % 4],
            f'{{"batch": "bench", "line": {i}}}',
        )


async def load_staging(url: str, n: int) -> float:
    conn = await asyncpg.connect(url)  # no custom codecs: COPY stays binary
    try:
        started = time.perf_counter()
        await conn.copy_records_to_table(
            "payment_staging",
            schema_name="payment_service",
            columns=STAGING_COLUMNS,
            records=staging_rows(n),
        )
        await conn.execute("ANALYZE payment_service.payment_staging")
        return time.perf_counter() - started
    finally:
        await conn.close()


async def raw_copy(url: str, scratch: Path) -> tuple[int, float]:
    """COPY the staged rows into payments from a pre-encoded binary file; then undo."""
    dump = scratch / "payments.bin"
    conn = await asyncpg.connect(url)
    try:
        await conn.copy_from_query(
            "SELECT gen_random_uuid(), reference_number, loan_account_number, cif, amount, "
            "payment_date, payment_channel, 'staging'::varchar, metadata "
            "FROM payment_service.payment_staging ORDER BY id",
            output=str(dump),
            format="binary",
        )
        started = time.perf_counter()
        status = await conn.copy_to_table(
            "payments",
            schema_name="payment_service",
            columns=PAYMENT_COLUMNS,
            source=str(dump),
            format="binary",
        )
        seconds = time.perf_counter() - started
        await conn.execute("TRUNCATE payment_service.payments")
        await conn.execute("CHECKPOINT")
        return int(status.split()[-1]), seconds
    finally:
        await conn.close()
        dump.unlink(missing_ok=True)


def server_cpu_seconds(postmaster_pid: int | None) -> float:
    """CPU used so far by the Postgres server processes (postmaster and its children)."""
    if postmaster_pid is None:
        return float("nan")
    import psutil

    total = 0.0
    root = psutil.Process(postmaster_pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


async def ingest(
    settings: Settings, n: int, workers: int, postmaster_pid: int | None
) -> dict[str, Any]:
    pool = await create_pool(
        settings,
        min_size=workers * StagingWorker.concurrency + 1,
        max_size=workers * StagingWorker.concurrency + 2,
    )
    samples: list[float] = []
    done = asyncio.Event()

    async def sample_rss() -> None:
        while not done.is_set():
            samples.append(rss_mib())
            try:
                await asyncio.wait_for(done.wait(), 0.5)
            except TimeoutError:
                pass

    try:
        wake = Wakeup()
        crew = [StagingWorker(pool, settings, wake) for _ in range(workers)]
        sampler = asyncio.create_task(sample_rss())
        await pool.execute("SELECT 1")  # the backends exist before the CPU snapshot
        server_cpu = server_cpu_seconds(postmaster_pid)
        own_cpu = time.process_time()
        started = time.perf_counter()
        # As a worker runs in `paygate run`: `concurrency` batches of it in flight at once.
        await asyncio.gather(*(w.burst() for w in crew for _ in range(w.concurrency)))
        seconds = time.perf_counter() - started
        own_cpu = time.process_time() - own_cpu
        server_cpu = server_cpu_seconds(postmaster_pid) - server_cpu
        done.set()
        await sampler
        samples.append(rss_mib())
        check = await pool.fetchrow(
            """
            SELECT (SELECT count(*) FROM payment_service.payments) AS payments,
                   (SELECT count(DISTINCT reference_number) FROM payment_service.payments) AS refs,
                   (SELECT count(*) FROM payment_service.outbox)
                   + (SELECT coalesce(sum(cardinality(payment_ids)), 0)
                      FROM payment_service.event_log) AS outbox,
                   (SELECT count(*) FROM payment_service.payment_staging
                     WHERE processed AND result = 'recorded') AS marked,
                   (SELECT count(*) FROM payment_service.staging_process_log
                     WHERE status = 'completed') AS batches,
                   (SELECT count(*) FROM payment_service.staging_process_log
                     WHERE status <> 'completed') AS failed
            """
        )
        assert check is not None
        return {
            "seconds": seconds,
            "rss": samples,
            "python_us": own_cpu / n * 1e6,
            "postgres_us": server_cpu / n * 1e6,
            **dict(check),
        }
    finally:
        await pool.close()


SERVERS = {"embedded": None, "debian": DEBIAN_POSTGRES_15}


async def measure(args: argparse.Namespace, bin_dir: Path | None) -> dict[str, Any]:
    """One full measurement on a fresh server (`bin_dir`: whose binaries; None = the
    embedded wheel's) or on DATABASE_URL."""
    scratch = Path(tempfile.mkdtemp(prefix="paygate-bench-staging-"))
    scratch.chmod(0o755)
    server: EmbeddedPostgres | None = None
    url = os.environ.get("DATABASE_URL", "")
    try:
        if not url:
            server = EmbeddedPostgres(scratch / "postgres", bin_dir=bin_dir)
            await server.start()
            url = server.url
        await migrate(url)
        settings = Settings.from_env(
            {},
            database_url=url,
            staging_batch_size=args.batch_size,
            staging_max_retries=3,
            kafka_topic="payment.events",
        )
        conn = await asyncpg.connect(url)
        tables = "payments, payment_references, outbox, audit_log, payment_staging, "
        tables += "staging_process_log, webhook_events"
        await conn.execute(
            "TRUNCATE " + ", ".join(f"payment_service.{t.strip()}" for t in tables.split(","))
        )
        version = await conn.fetchval("SHOW server_version")
        await conn.close()
        pool = await create_pool(settings, min_size=1, max_size=2)
        await ensure_partitions(pool, settings)
        await pool.close()

        n = args.rows
        print(f"PostgreSQL {version}: loading {n:,} staging rows...", file=sys.stderr)
        load_s = await load_staging(url, n)
        print("raw COPY into payments...", file=sys.stderr)
        copied, copy_s = await raw_copy(url, scratch)
        assert copied == n, copied
        print(f"ingesting with {args.workers} worker(s)...", file=sys.stderr)
        load_before = os.getloadavg()[0]
        pid = server.proc.pid if server is not None and server.proc is not None else None
        result = await ingest(settings, n, args.workers, pid)
        load_after = os.getloadavg()[0]
    finally:
        if server is not None:
            await server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    ok = result["payments"] == result["refs"] == result["outbox"] == result["marked"] == n
    return {
        **result,
        "ok": ok and result["failed"] == 0,
        "version": version,
        "load_rate": n / load_s,
        "copy_s": copy_s,
        "copy_rate": n / copy_s,
        "e2e_rate": n / result["seconds"],
        "load_before": load_before,
        "load_after": load_after,
    }


def report(args: argparse.Namespace, r: dict[str, Any]) -> str:
    n = args.rows
    rss = r["rss"]
    cpus = os.cpu_count() or 1
    return f"""
### Staging ingestion, {n:,} rows, PostgreSQL {r["version"]} ({datetime.now(UTC):%Y-%m-%d})

`python -m bench.staging --rows {n} --batch-size {args.batch_size} --workers {args.workers} --postgres {args.postgres}`
on {cpus} CPUs (embedded or Debian server unless DATABASE_URL), fsync and
synchronous_commit on. Staging load: {r["load_rate"]:,.0f} rows/s (COPY, not measured below).

| step | rows | seconds | rows/s |
|---|---:|---:|---:|
| (a) raw COPY into `payments` (binary, no dedup/outbox) | {n:,} | {r["copy_s"]:.1f} | {r["copy_rate"]:,.0f} |
| (b) StagingWorker end to end (validate, dedup, payments + outbox + audit, mark, log) | {n:,} | {r["seconds"]:.1f} | {r["e2e_rate"]:,.0f} |

- (b) / (a) = **{r["e2e_rate"] / r["copy_rate"]:.0%}** (target >= 40%); (b) target >= 30,000 rows/s.
- Batches: {r["batches"]} completed, {r["failed"]} failed; batch size {args.batch_size}, {args.workers} worker(s).
- Check: payments {r["payments"]:,}, distinct references {r["refs"]:,},
  events {r["outbox"]:,}, staging rows marked recorded {r["marked"]:,}: {"OK" if r["ok"] else "MISMATCH"}.
- Machine load average (1 min) before / after (b): {r["load_before"]:.1f} / {r["load_after"]:.1f}
  (2 cores shared with everything else running: above ~1 the figures are pessimistic).
- CPU per row in (b): Python {r["python_us"]:.1f} us, Postgres {r["postgres_us"]:.1f} us
  (Postgres n/a with DATABASE_URL); {cpus} idle cores would allow about
  {cpus * 1e6 / (r["python_us"] + r["postgres_us"]):,.0f} rows/s at that cost.
- Bench process RSS: start {rss[0]:.0f} MiB, middle {rss[len(rss) // 2]:.0f} MiB, end {rss[-1]:.0f} MiB (max {max(rss):.0f} MiB).
"""


def comparison(runs: list[tuple[str, dict[str, Any]]]) -> str:
    """Servers side by side, each rate as a ratio to the first server's (its baseline)."""
    base = runs[0][1]
    lines = [
        "",
        f"### Staging on each server, one run (baseline: {runs[0][0]}, PostgreSQL {base['version']})",
        "",
        "| server | PostgreSQL | raw COPY rows/s | staging rows/s | staging / its COPY | staging / baseline's | Postgres us/row |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in runs:
        lines.append(
            f"| {name} | {r['version']} | {r['copy_rate']:,.0f} | {r['e2e_rate']:,.0f} "
            f"| {r['e2e_rate'] / r['copy_rate']:.2f} | {r['e2e_rate'] / base['e2e_rate']:.2f} "
            f"| {r['postgres_us']:.1f} |"
        )
    return "\n".join(lines) + "\n"


async def run(args: argparse.Namespace) -> int:
    names = list(SERVERS) if args.postgres == "both" else args.postgres.split(",")
    if unknown := set(names) - set(SERVERS):
        raise SystemExit(f"--postgres: unknown server {', '.join(sorted(unknown))}")
    runs: list[tuple[str, dict[str, Any]]] = []
    for name in names:
        result = await measure(args, SERVERS[name])
        print(report(args, result))
        runs.append((name, result))
    if len(runs) > 1:
        print(comparison(runs))
    return 0 if all(r["ok"] for _, r in runs) else 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.staging", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--postgres",
        default="embedded",
        help="embedded (the wheel's 18), debian (Debian's 15), a comma list of them in the"
        " order to run, or both (= embedded,debian)",
    )
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
