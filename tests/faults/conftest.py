"""Fixtures for the fault scenarios: gateway processes against the session's servers,
drivers aimed at them, and a guarantee that every server a test stopped runs again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.clients.kafka import ensure_topic
from tests.conftest import TEST_SECRET, make_settings
from tests.events import NOTHING_QUEUED
from tests.faults.harness import GatewayProcess, LoadDriver, gateway_env
from tests.stack import TestStack

# A relay that notices a broker coming back quickly (the runs are seconds long).
RELAY = {
    "enable_outbox_relay": True,
    "outbox_poll_interval_ms": 200,
    "outbox_backoff_base_ms": 50,
    "outbox_backoff_max_seconds": 1,
    "kafka_request_timeout_ms": 2000,
}


@dataclass
class Faults:
    stack: TestStack
    tmp: Path
    processes: list[GatewayProcess] = field(default_factory=list)

    def new_topic(self) -> str:
        return f"payment.events.faults.{uuid.uuid4().hex[:12]}"

    async def create_topic(self, topic: str) -> None:
        await ensure_topic(make_settings(self.stack, kafka_topic=topic))

    async def gateway(
        self, command: str = "serve", *, topic: str | None = None, **overrides: Any
    ) -> GatewayProcess:
        """A started gateway process; stopped (or killed) when the test ends."""
        topic = topic or self.new_topic()
        await self.create_topic(topic)
        env = gateway_env(
            database_url=self.stack.database_url,
            redis_url=self.stack.redis_url,
            kafka_bootstrap=self.stack.kafka_bootstrap,
            secret=TEST_SECRET,
            topic=topic,
            data_dir=self.tmp / "data",
            **overrides,
        )
        n = len(self.processes)
        proc = GatewayProcess(env, self.tmp / f"gateway-{n}.log", command=command)
        self.processes.append(proc)
        await proc.start()
        return proc

    def driver(self, *gateways: GatewayProcess, **options: Any) -> LoadDriver:
        return LoadDriver([g.url for g in gateways], TEST_SECRET, **options)

    async def outbox_empty(self) -> bool:
        conn = await asyncpg.connect(self.stack.database_url)
        try:
            return bool(await conn.fetchval(NOTHING_QUEUED))
        finally:
            await conn.close()

    def logs(self) -> str:
        return "\n".join(p.log_tail(1500) for p in self.processes)


async def restore_servers(stack: TestStack) -> None:
    """Whatever a scenario did to the shared servers, they all answer again."""
    for server in stack.servers.values():
        if not server.running:
            await server.start()


@pytest.fixture
async def faults(
    db: asyncpg.Pool, pool: asyncpg.Pool, stack: TestStack, tmp_path: Path
) -> AsyncIterator[Faults]:
    if set(stack.servers) != {"postgres", "redis", "kafka"}:
        pytest.skip("fault scenarios need the embedded servers (they stop and start them)")
    f = Faults(stack, tmp_path)
    try:
        yield f
    finally:
        await asyncio.gather(*(proc.stop(timeout=10) for proc in f.processes))
        await restore_servers(stack)
        # The session pool's connections may have been cut by the scenario.
        await pool.expire_connections()
