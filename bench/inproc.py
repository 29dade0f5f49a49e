"""CPU per webhook inside the server process, without the network or a load generator.

On two shared cores the end-to-end benches swing by ±10% from run to run, too much to
judge a change worth 5 µs. This drives the real application (`create_app`, on the
runner `paygate serve` uses) through aiohttp's own protocol object
over an in-memory transport, with `--connections` requests in flight, and divides
the process's CPU time by the requests answered. Postgres and Redis are real
(embedded) and run in their own processes, so only the server's Python is counted.

    python -m bench.inproc --mode dup --requests 100000
    python -m bench.inproc --mode new --requests 60000
    python -m bench.inproc --mode bare --requests 100000   # the framework's share
    python -m bench.inproc --mode dup --limits none,local,redis --requests 60000
    python -m bench.inproc --mode new --tracing off,on,off,on --requests 30000

`--limits` runs the app once per rate-limit backend in the same run (same stack, same
requests): `none` (no channel limit), `local` (per-process bucket) and `redis` (the
shared, leased bucket), the generic channel at `--limit-rate` per second with as much
burst, so every request is admitted and the figure is the limiter's hot-path cost.

`--stages` answers each request after a given step, once per stage in the same run and
in alternating order, so the differences between stages are what each step costs in
the server as it runs (caches shared with aiohttp, the signature check, the writer),
not in a tight loop: `bare` (the framework alone), `parse` (the pipeline answers right
after parsing), `validate` (after validation), `hash` (after the business hash too),
`nodb` (everything but the recording statement, answered as if it recorded every
payment) and `full`.

    python -m bench.inproc --stages bare,parse,validate,hash,nodb,full --rounds 3

`--tracing` runs the app once per entry in the same run: `off` (no OTEL_* variables: the
shipped default) and `on` (every span recorded by the OpenTelemetry SDK and handed to
a batch processor whose exporter drops them, so the figure is paygate's and the SDK's
cost without a network).

Figures are for comparing two versions of the code on one machine, not for RESULTS'
throughput tables.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from bench.bare import create_bare_app
from bench.stack import bench_stack, mode_requests
from gateway import appkeys
from gateway.http.server import GatewayRunner
from gateway.security.slow_clients import server_kwargs
from workers.cli.serve import GC_THRESHOLDS


class _Transport(asyncio.Transport):
    """Collects what the server writes; counts complete responses."""

    def __init__(self, done: asyncio.Queue[int]) -> None:
        super().__init__()
        self.done = done
        self.closing = False
        self.statuses: dict[int, int] = {}

    def _sent(self, data: bytes) -> None:
        if data.startswith(b"HTTP/1.1 "):
            status = int(data[9:12])
            self.statuses[status] = self.statuses.get(status, 0) + 1
            self.done.put_nowait(status)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._sent(bytes(data))

    def writelines(self, chunks: Any) -> None:
        chunks = list(chunks)
        if chunks:
            self._sent(bytes(chunks[0]))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in ("peername", "sockname"):
            return ("127.0.0.1", 40000)
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_reading(self) -> bool:
        return True

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


async def drive(
    runner: web.AppRunner, requests: list[bytes], connections: int
) -> tuple[float, float, dict[int, int]]:
    """Send every request, `connections` at a time; CPU and wall seconds, statuses."""
    server = runner.server
    assert server is not None
    done: asyncio.Queue[int] = asyncio.Queue()
    conns = []
    for _ in range(connections):
        proto = server()
        transport = _Transport(done)
        proto.connection_made(transport)
        conns.append((proto, transport))
    feed = iter(requests)
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)  # as `paygate serve` runs (workers.cli.serve.tune_gc)
    cpu, wall = time.process_time(), time.perf_counter()
    # Each connection has one request in flight; a response frees "a" connection,
    # and since keep-alive handlers are serial, round-robin keeps every one busy.
    for proto, _ in conns:
        proto.data_received(next(feed))
    for i, raw in enumerate(feed):
        await done.get()
        conns[i % connections][0].data_received(raw)
    for _ in range(connections):
        await done.get()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    statuses: dict[int, int] = {}
    for _, transport in conns:
        for k, v in transport.statuses.items():
            statuses[k] = statuses.get(k, 0) + v
    for proto, _ in conns:
        proto.connection_lost(None)
    return cpu, wall, statuses


async def run_app(
    app: web.Application, settings: Any, seed: list[bytes], reqs: list[bytes], connections: int
) -> tuple[float, float, dict[int, int]]:
    kwargs: dict[str, Any] = {"access_log": None, "handle_signals": False}
    runner = (  # paygate's own runner, as `paygate serve` has it; the bare app has no settings
        GatewayRunner(app, **kwargs)
        if appkeys.SETTINGS in app
        else web.AppRunner(app, **kwargs, **server_kwargs(settings))
    )
    await runner.setup()
    try:
        if seed:  # record the payments the duplicates repeat (as run_all does)
            await drive(runner, seed, connections)
        return await drive(runner, reqs, connections)
    finally:
        await runner.cleanup()


async def main_async(args: argparse.Namespace) -> None:
    async with bench_stack("paygate-inproc-") as stack:
        settings = stack.settings()
        if args.limits:
            await compare_limits(args, stack, settings)
            return
        if args.tracing:
            await compare_tracing(args, stack, settings)
            return
        if args.stages:
            await compare_stages(args, stack, settings)
            return
        seed, reqs = mode_requests("127.0.0.1:3004", args.mode, args.requests, stack.key)
        if args.mode == "bare":
            app = create_bare_app(stack.key)
        else:
            from gateway.app import create_app

            app = create_app(settings)
        cpu, wall, statuses = await run_app(app, settings, seed, reqs, args.connections)
        n = sum(statuses.values())
        print(
            f"mode={args.mode} requests={n} statuses={statuses} "
            f"cpu={1e6 * cpu / n:.1f} µs/request wall={n / wall:,.0f} req/s"
        )


async def compare_limits(args: argparse.Namespace, stack: Any, settings: Any) -> None:
    from gateway.app import create_app

    channels = Path(stack.root) / "channels.toml"
    rate = args.limit_rate
    channels.write_text(f"[channels.generic]\nrate_per_second = {rate}\nburst = {int(rate)}\n")
    results: dict[str, tuple[float, float]] = {}
    for limit in args.limits.split(","):
        chosen = {
            "none": settings,
            "local": settings.replace(channels_file=str(channels), rate_limit_backend="local"),
            "redis": settings.replace(channels_file=str(channels), rate_limit_backend="redis"),
        }[limit]
        seed, reqs = mode_requests("127.0.0.1:3004", args.mode, args.requests, stack.key)
        cpu, wall, statuses = await run_app(
            create_app(chosen), chosen, seed, reqs, args.connections
        )
        n = sum(statuses.values())
        results[limit] = (1e6 * cpu / n, n / wall)
        print(
            f"limit={limit} mode={args.mode} requests={n} statuses={statuses} "
            f"cpu={1e6 * cpu / n:.1f} µs/request wall={n / wall:,.0f} req/s"
        )
    base = results.get("none")
    if base:
        for limit, (cpu_us, rps) in results.items():
            print(
                f"  {limit}: {rps:,.0f} req/s (ratio to none {rps / base[1]:.2f}), "
                f"{cpu_us:.1f} µs/request (ratio {cpu_us / base[0]:.2f})"
            )


async def compare_tracing(args: argparse.Namespace, stack: Any, settings: Any) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from gateway.app import create_app
    from gateway.observability import tracing

    class Dropped(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    results: dict[str, list[tuple[float, float]]] = {}
    for mode in args.tracing.split(","):
        tracing.use(provider if mode == "on" else None)
        seed, reqs = mode_requests("127.0.0.1:3004", args.mode, args.requests, stack.key)
        cpu, wall, statuses = await run_app(
            create_app(settings), settings, seed, reqs, args.connections
        )
        tracing.use(None)
        n = sum(statuses.values())
        results.setdefault(mode, []).append((1e6 * cpu / n, n / wall))
        print(
            f"tracing={mode} mode={args.mode} requests={n} statuses={statuses} "
            f"cpu={1e6 * cpu / n:.1f} µs/request wall={n / wall:,.0f} req/s"
        )
    provider.shutdown()
    base = results.get("off")
    if base:
        base_cpu = min(c for c, _ in base)
        for mode, runs in results.items():
            best = min(c for c, _ in runs)
            print(f"  {mode}: best {best:.1f} µs/request (ratio to off {best / base_cpu:.2f})")


STAGES = ("bare", "parse", "validate", "hash", "nodb", "full")


@contextlib.contextmanager
def stopped_after(stage: str) -> Iterator[None]:
    """The app answering 201 once `stage` is done (see the module docstring)."""
    from gateway.db.payments import BatchOutcome, Candidate
    from gateway.ingest import pipeline, writer

    saved = pipeline.Pipeline.process_fields, writer.record_batch

    async def answer_early(
        self: pipeline.Pipeline, channel: Any, fields: Any, body: bytes, **_: Any
    ) -> pipeline.Answer:
        if stage != "parse":
            payment = self.validated(channel, fields)
            if stage == "hash":
                _ = payment.payload_hash  # computed once and kept on the payment
        return pipeline.Answer(201, {"status": "created", "payment_id": "-"}, "created")

    async def recorded(conn: Any, candidates: list[Candidate], **_: Any) -> BatchOutcome:
        return BatchOutcome(set(), {}, set(), len(candidates))

    if stage in ("parse", "validate", "hash"):
        pipeline.Pipeline.process_fields = answer_early  # type: ignore[assignment,method-assign]
    elif stage == "nodb":
        writer.record_batch = recorded  # type: ignore[assignment]
    try:
        yield
    finally:
        pipeline.Pipeline.process_fields, writer.record_batch = saved  # type: ignore[method-assign]


async def compare_stages(args: argparse.Namespace, stack: Any, settings: Any) -> None:
    from gateway.app import create_app

    stages = args.stages.split(",")
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise SystemExit(f"unknown stages {sorted(unknown)}: choose from {', '.join(STAGES)}")
    runs: dict[str, list[float]] = {stage: [] for stage in stages}
    for round_ in range(args.rounds):  # forward, then backward: no stage always runs first
        for stage in stages if round_ % 2 == 0 else stages[::-1]:
            _, reqs = mode_requests("127.0.0.1:3004", "new", args.requests, stack.key)
            app = create_bare_app(stack.key) if stage == "bare" else create_app(settings)
            with stopped_after(stage):
                cpu, _, statuses = await run_app(app, settings, [], reqs, args.connections)
            n = sum(statuses.values())
            runs[stage].append(1e6 * cpu / n)
            print(f"stage={stage} statuses={statuses} cpu={1e6 * cpu / n:.1f} µs/request")
    previous = None
    for stage in stages:
        best = min(runs[stage])
        step = "" if previous is None else f", +{best - previous:.1f} µs for this step"
        print(f"  {stage}: best {best:.1f} µs/request{step} (runs: "
              f"{', '.join(f'{x:.1f}' for x in runs[stage])})")  # fmt: skip
        previous = best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mode", choices=("new", "dup", "bare"), default="dup")
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--connections", type=int, default=256)
    ap.add_argument("--limits", default="", help="e.g. none,local,redis: one run each")
    ap.add_argument("--limit-rate", type=float, default=200_000.0)
    ap.add_argument("--tracing", default="", help="e.g. off,on,off,on: one run each")
    ap.add_argument("--stages", default="", help=f"some of {','.join(STAGES)}, in that order")
    ap.add_argument("--rounds", type=int, default=3, help="with --stages: runs of each stage")
    args = ap.parse_args()
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import uvloop

    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
