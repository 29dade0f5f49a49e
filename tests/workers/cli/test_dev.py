"""`paygate dev` as a user runs it: healthy, serving on every usable CPU with the workers in
a process of their own, Ctrl-C leaves nothing behind, kill -9 leaves nothing behind, a
dead workers process comes back, and the database survives a restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import psutil

from gateway.config import usable_cpus
from gateway.ingest.signatures import decode_secret, sign
from tests.conftest import wait_for
from tests.events import NOTHING_QUEUED
from tests.webhooks import payment_doc
from workers.cli.devstack import EmbeddedPostgres, free_port


def _paygate_children(proc: subprocess.Popen[bytes]) -> dict[str, list[psutil.Process]]:
    """The parent's direct python children by command: serve (servers), worker (workers)."""
    found: dict[str, list[psutil.Process]] = {"serve": [], "worker": []}
    for child in psutil.Process(proc.pid).children():
        try:
            cmd = child.cmdline()
        except psutil.Error:  # exited, not yet reaped by the supervisor
            continue
        kind = cmd[cmd.index("workers.cli") + 1] if "workers.cli" in cmd else None
        # A child between fork and exec still shows the parent's command (`dev`): skipped.
        if kind in found:
            found[kind].append(child)
    return found


async def _wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "paygate dev exited early"
            try:
                async with s.get(f"http://127.0.0.1:{port}/health") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("paygate dev never became healthy")


def _start(data: Path, port: int, ports: dict[str, int]) -> subprocess.Popen[bytes]:
    unset = ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "WEBHOOK_SECRET")
    env = {k: v for k, v in os.environ.items() if k not in (*unset, "WEB_CONCURRENCY")}
    env.update(PORT=str(port), PAYGATE_DATA_DIR=str(data), LOG_LEVEL="WARNING",
               EMBEDDED_PG_PORT=str(ports["pg"]), EMBEDDED_REDIS_PORT=str(ports["redis"]),
               EMBEDDED_KAFKA_PORT=str(ports["kafka"]))  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "dev"], env=env, stdout=subprocess.DEVNULL
    )


async def _stop_and_check_no_orphans(
    proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGINT
) -> None:
    children = psutil.Process(proc.pid).children(recursive=True)
    try:
        names = set()
        for child in children:  # a short-lived child (a Postgres backend) may be gone already
            with contextlib.suppress(psutil.NoSuchProcess):
                names.add(child.name())
        assert {"postgres", "redis-server", "tansu"} <= names, names
        if sig == signal.SIGKILL:
            proc.kill()
            proc.wait()
            _gone, alive = psutil.wait_procs(children, timeout=30)
            assert not alive, [(p.pid, p.name()) for p in alive]
            return
        proc.send_signal(sig)
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert proc.returncode == 0
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, [p.pid for p in alive]
    finally:
        _reap(proc, children)


def _reap(proc: subprocess.Popen[bytes], children: list[psutil.Process]) -> None:
    """Whatever a failed check left running is killed: a failing test must not leave a
    dev stack behind for the next one (or the next run) to trip over."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


async def _post(port: int, key: bytes, doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    body = orjson.dumps(doc)
    headers = sign("standard", key, body, now=int(time.time()), delivery_id="msg_dev")
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"http://127.0.0.1:{port}/api/v1/payments/webhook", data=body, headers=headers) as r,
    ):
        return r.status, await r.json()


async def test_dev_runs_serves_stops_cleanly_and_keeps_rows() -> None:
    data = Path(tempfile.mkdtemp(prefix="paygate-dev-"))
    data.chmod(0o755)
    ports = {"pg": free_port(), "redis": free_port(), "kafka": free_port()}
    port = free_port()
    doc = payment_doc()
    try:
        proc = _start(data, port, ports)
        try:
            await _wait_healthy(port, proc)
            key = decode_secret("standard", (data / "dev-webhook-secret").read_text().strip())
            status, created = await _post(port, key, doc)
            assert status == 201
            # Production-shaped by default: a server per usable CPU, workers apart.
            found = _paygate_children(proc)
            assert len(found["serve"]) == usable_cpus() - 1, found
            assert len(found["worker"]) == 1, found
        finally:
            await _stop_and_check_no_orphans(proc)

        proc = _start(data, port, ports)
        try:
            await _wait_healthy(port, proc)
            status, again = await _post(port, key, doc)
            assert (status, again["payment_id"]) == (200, created["payment_id"])
        finally:
            await _stop_and_check_no_orphans(proc)
    finally:
        shutil.rmtree(data, ignore_errors=True)


async def _outbox_empty(data: Path, pg_port: int) -> bool:
    conn = await asyncpg.connect(EmbeddedPostgres(data / "postgres", pg_port).url)
    try:
        return bool(await conn.fetchval(NOTHING_QUEUED))
    finally:
        await conn.close()


async def test_dead_workers_process_comes_back_and_kill9_leaves_nothing() -> None:
    data = Path(tempfile.mkdtemp(prefix="paygate-dev-"))
    data.chmod(0o755)
    ports = {"pg": free_port(), "redis": free_port(), "kafka": free_port()}
    port = free_port()
    try:
        proc = _start(data, port, ports)
        try:
            await _wait_healthy(port, proc)
            key = decode_secret("standard", (data / "dev-webhook-secret").read_text().strip())
            [first] = _paygate_children(proc)["worker"]
            first.kill()

            async def replaced() -> bool:
                now = _paygate_children(proc)["worker"]
                return len(now) == 1 and now[0].pid != first.pid

            await wait_for(replaced, timeout=30, interval=0.2)
            # The new relay publishes what is committed after it came back.
            status, _ = await _post(port, key, payment_doc())
            assert status == 201
            await wait_for(lambda: _outbox_empty(data, ports["pg"]), timeout=30, interval=0.2)
        finally:
            await _stop_and_check_no_orphans(proc, signal.SIGKILL)
    finally:
        shutil.rmtree(data, ignore_errors=True)
