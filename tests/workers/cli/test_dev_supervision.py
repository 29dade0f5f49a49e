"""`paygate dev` supervises its embedded servers as it does its own processes (issue 33):
after a kill -9 of the postmaster and of the broker, both come back without help, and
webhooks are acknowledged and their events published again."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import psutil

from gateway.ingest.signatures import decode_secret
from tests.conftest import wait_for
from tests.webhooks import payment_doc
from tests.workers.cli.test_dev import (
    _outbox_empty,
    _post,
    _start,
    _stop_and_check_no_orphans,
    _wait_healthy,
)
from workers.cli.devstack import free_port


def _server(dev: psutil.Process, name: str) -> psutil.Process:
    """The dev process's direct child running `name` (the postmaster, not a backend)."""
    [found] = [c for c in dev.children() if _name(c) == name]
    return found


def _name(process: psutil.Process) -> str | None:
    try:
        return process.name()
    except psutil.NoSuchProcess:  # exited between the listing and the look (a restart)
        return None


async def test_a_killed_postmaster_and_broker_come_back_without_help() -> None:
    data = Path(tempfile.mkdtemp(prefix="paygate-dev-"))
    data.chmod(0o755)
    ports = {"pg": free_port(), "redis": free_port(), "kafka": free_port()}
    port = free_port()
    try:
        proc = _start(data, port, ports)
        try:
            await _wait_healthy(port, proc)
            key = decode_secret("standard", (data / "dev-webhook-secret").read_text().strip())
            assert (await _post(port, key, payment_doc()))[0] == 201
            dev = psutil.Process(proc.pid)
            postmaster, broker = _server(dev, "postgres"), _server(dev, "tansu")
            postmaster.kill()
            broker.kill()
            killed_at = time.monotonic()

            async def acknowledged() -> bool:
                try:
                    return (await _post(port, key, payment_doc()))[0] == 201
                except Exception:  # the answer may be a 503 or a broken connection meanwhile
                    return False

            await wait_for(acknowledged, timeout=90, interval=0.5)
            # Reaped, not a zombie holding its pid (pg_ctl and a new postmaster would refuse).
            assert not psutil.pid_exists(postmaster.pid) or (
                psutil.Process(postmaster.pid).status() != psutil.STATUS_ZOMBIE
            )
            assert _server(dev, "postgres").pid != postmaster.pid
            assert _server(dev, "tansu").pid != broker.pid
            # The broker is back: what was committed meanwhile is published.
            await wait_for(lambda: _outbox_empty(data, ports["pg"]), timeout=60, interval=0.5)
            assert time.monotonic() - killed_at < 150
        finally:
            await _stop_and_check_no_orphans(proc)
    finally:
        shutil.rmtree(data, ignore_errors=True)
