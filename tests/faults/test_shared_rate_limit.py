"""Issue 21: a channel's rate limit holds across three gateway processes sharing one Redis,
and when Redis is killed each process keeps admitting its fallback share.

Three `paygate serve` processes, a channel at 50/s (burst 10). Each process is driven
far above its share; what counts is how many deliveries were admitted (201) in a
window: with the shared bucket, within 10% of rate x window (plus the burst). Then Redis
is SIGKILLed: every process reports `paygate_rate_limit_fallback 1` and admits at most
its share (rate / 3 instances), more than none, and nothing is answered 500.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.conftest import wait_for
from tests.faults.conftest import Faults
from tests.faults.harness import WEBHOOK_PATH, GatewayProcess
from tests.webhooks import payment_doc, signed_headers

pytestmark = pytest.mark.faults

RATE = 50.0
BURST = 10
PROCESSES = 3
WINDOW = 4.0  # seconds of shared limiting measured
FALLBACK_WINDOW = 3.0
SENDERS = 4  # concurrent senders per process: offered load far above the rate


async def drive(session: aiohttp.ClientSession, gw: GatewayProcess, seconds: float) -> Counter[int]:
    """Post new payments to `gw` for `seconds`; the statuses answered."""
    statuses: Counter[int] = Counter()
    deadline = time.monotonic() + seconds

    async def sender() -> None:
        while time.monotonic() < deadline:
            body = orjson.dumps(payment_doc())
            async with session.post(
                gw.url + WEBHOOK_PATH, data=body, headers=signed_headers(body)
            ) as resp:
                await resp.read()
                statuses[resp.status] += 1
            if resp.status == 429:
                await asyncio.sleep(0.005)  # a provider backs off; keeps the box usable

    await asyncio.gather(*(sender() for _ in range(SENDERS)))
    return statuses


async def gauge(session: aiohttp.ClientSession, gw: GatewayProcess, name: str) -> float | None:
    async with session.get(gw.url + "/metrics") as resp:
        text = await resp.text()
    found = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


async def test_three_processes_share_one_rate_and_fall_back_to_their_shares(
    faults: Faults, tmp_path: Path
) -> None:
    channels = tmp_path / "channels.toml"
    channels.write_text(f"[channels.generic]\nrate_per_second = {RATE}\nburst = {BURST}\n")
    gateways = [
        await faults.gateway("serve", channels_file=channels, redis_timeout_ms=50)
        for _ in range(PROCESSES)
    ]
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def all_counted() -> bool:
            counts = [await gauge(session, g, "paygate_rate_limit_instances") for g in gateways]
            return counts == [float(PROCESSES)] * PROCESSES

        await wait_for(all_counted, timeout=15)

        shared = await asyncio.gather(*(drive(session, g, WINDOW) for g in gateways))
        admitted = sum(s[201] for s in shared)
        expected = RATE * WINDOW
        assert 0.9 * expected <= admitted <= 1.1 * expected + BURST, (
            f"admitted {admitted} in {WINDOW}s at {RATE}/s across {PROCESSES}: {shared}"
        )
        assert all(set(s) <= {201, 429} for s in shared), shared

        faults.stack.redis.kill()

        async def all_in_fallback() -> bool:
            await asyncio.gather(*(drive(session, g, 0.2) for g in gateways))
            flags = [await gauge(session, g, "paygate_rate_limit_fallback") for g in gateways]
            return flags == [1.0] * PROCESSES

        await wait_for(all_in_fallback, timeout=15)
        alone = await asyncio.gather(*(drive(session, g, FALLBACK_WINDOW) for g in gateways))

    share = RATE / PROCESSES
    share_burst = -(-BURST // PROCESSES)
    for statuses in alone:
        assert set(statuses) <= {201, 429}, f"Redis loss caused other answers: {alone}"
        assert 0 < statuses[201] <= 1.1 * share * FALLBACK_WINDOW + share_burst, (
            f"a process admitted {statuses[201]} in {FALLBACK_WINDOW}s, share {share}/s: {alone}"
        )
    total = sum(s[201] for s in alone)
    print(
        f"shared: {admitted / WINDOW:.1f}/s admitted at {RATE}/s ({shared}); "
        f"fallback: {total / FALLBACK_WINDOW:.1f}/s, share {share:.1f}/s each ({alone})"
    )
    assert total <= 1.1 * RATE * FALLBACK_WINDOW + BURST, alone
