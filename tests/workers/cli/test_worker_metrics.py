"""`paygate worker` run on its own (a Kubernetes worker pod) serves its metrics on
METRICS_PORT, so the relay's lag and dead letters are scraped there."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import TEST_SECRET
from tests.faults.harness import gateway_env
from tests.stack import server_set
from workers.cli.devstack import free_port


@pytest.mark.skipif(server_set() != "embedded", reason="no SQL of its own: default pass only")
async def test_a_worker_alone_serves_metrics_on_metrics_port(
    stack: Any, db: Any, tmp_path: Path
) -> None:
    port = free_port()
    env = gateway_env(
        database_url=stack.database_url, redis_url=stack.redis_url,
        kafka_bootstrap=stack.kafka_bootstrap, secret=TEST_SECRET, topic="payment.events.m",
        data_dir=tmp_path, metrics_port=port,
    )  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.cli", "worker", "partitions", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        text = ""
        deadline = asyncio.get_running_loop().time() + 30
        async with aiohttp.ClientSession() as session:
            while "paygate_" not in text:
                if proc.returncode is not None:
                    assert proc.stderr is not None
                    raise AssertionError(f"the worker exited: {await proc.stderr.read()!r}")
                assert asyncio.get_running_loop().time() < deadline, "no /metrics in time"
                try:
                    async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                        text = await resp.text()
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.2)
        assert "# TYPE paygate_" in text  # Prometheus text of this process
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
