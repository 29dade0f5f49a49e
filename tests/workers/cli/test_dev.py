"""`paygate dev` as a user runs it: healthy, serving, Ctrl-C leaves nothing behind, and the
database survives a restart."""

from __future__ import annotations

import asyncio
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
import orjson
import psutil

from gateway.ingest.signatures import decode_secret, sign
from tests.webhooks import payment_doc
from workers.cli.devstack import free_port


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
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "WEBHOOK_SECRET")
    }
    env.update(PORT=str(port), PAYGATE_DATA_DIR=str(data), LOG_LEVEL="WARNING",
               EMBEDDED_PG_PORT=str(ports["pg"]), EMBEDDED_REDIS_PORT=str(ports["redis"]),
               EMBEDDED_KAFKA_PORT=str(ports["kafka"]))  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "dev"], env=env, stdout=subprocess.DEVNULL
    )


async def _stop_and_check_no_orphans(proc: subprocess.Popen[bytes]) -> None:
    children = psutil.Process(proc.pid).children(recursive=True)
    names = {c.name() for c in children}
    assert {"postgres", "redis-server", "tansu"} <= names, names
    proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert proc.returncode == 0
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, [p.pid for p in alive]


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
