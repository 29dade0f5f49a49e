"""Session-wide real servers, a clean database per test, and an app factory client."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner

from gateway.clients.kafka import ensure_topic
from gateway.config import Settings
from gateway.db.migrations import migrate
from gateway.db.pool import create_pool
from tests.stack import MissingServers, TestStack


class AppServer(TestServer):
    """The test server on the runner `paygate serve` uses (gateway.http.server): the
    slow-client limits, JSON protocol errors and the per-source connection bound."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        from gateway.http.server import GatewayRunner

        return GatewayRunner(self.app, **kwargs)


TEST_SECRET = "whsec_" + "dGVzdC1zZWNyZXQtZm9yLXBheWdhdGUtdGVzdHMtMDE="  # base64 of a test key

# Every table a test may write; truncated before each test that uses the database.
TABLES = (
    "payments", "payment_references", "webhook_events", "outbox", "payment_staging",
    "staging_process_log", "audit_log", "pending_status_updates", "reconciliation_items",
    "reconciliation_runs", "payment_reviews", "status_poll_state", "delivery_replays",
    "exception_comments", "revoked_tokens", "webhook_outcomes", "event_log", "event_cursors",
)  # fmt: skip

# After the truncation every lane of the event log starts from now (sql/170).
RESET_CURSORS = """
INSERT INTO payment_service.event_cursors (lane, done, relay)
SELECT lane, pg_current_snapshot(), 'test' FROM generate_series(0, 7) AS lane
"""


_started: list[TestStack] = []  # the session's servers, named in the terminal summary


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that needs a server is marked `servers`: `make test` runs those again on
    the other server set (PAYGATE_TEST_SERVERS=debian)."""
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.servers)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for s in _started:
        terminalreporter.write_line(f"servers: {s.describe()}")


@pytest.fixture(scope="session")
async def stack() -> AsyncIterator[TestStack]:
    try:
        s = await TestStack.start()
    except MissingServers as exc:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"CI needs every server set: {exc}")
        pytest.skip(str(exc))
    _started.append(s)
    await migrate(s.database_url)
    try:
        yield s
    finally:
        await s.stop()


@pytest.fixture(autouse=True)
def _postgres_version_marker(request: pytest.FixtureRequest) -> None:
    """`@pytest.mark.postgres(min=16)` / `(max=15)`: a test of one end of the range runs
    only on the servers it is about."""
    marker = request.node.get_closest_marker("postgres")
    if marker is None:
        return
    major = request.getfixturevalue("stack").postgres_major
    low, high = marker.kwargs.get("min", 0), marker.kwargs.get("max", 99)
    if not low <= major <= high:
        pytest.skip(f"needs PostgreSQL {low}..{high}, this session runs {major}")


def make_settings(stack: TestStack, **overrides: Any) -> Settings:
    """Test settings: real URLs, a unique topic per call, background workers off unless
    a test turns one on."""
    base: dict[str, Any] = {
        "database_url": stack.database_url,
        "redis_url": stack.redis_url,
        "kafka_bootstrap_servers": stack.kafka_bootstrap,
        "kafka_topic": f"payment.events.{uuid.uuid4().hex[:12]}",
        "webhook_secret": (TEST_SECRET,),
        "db_pool_min": 1,
        "db_pool_max": 6,
        "cache_warm_count": 1000,
        "enable_outbox_relay": False,
        "enable_staging_processor": False,
        "enable_partition_maintenance": False,
        "enable_status_poller": False,
        "admin_jwt_secret": "test-admin-jwt-secret-0123456789abcdef",
    }
    base.update(overrides)
    return Settings.from_env({}, **base)


@pytest.fixture
def settings(stack: TestStack) -> Settings:
    return make_settings(stack)


@pytest.fixture(scope="session")
async def pool(stack: TestStack) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(make_settings(stack), min_size=1, max_size=4)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def db(stack: TestStack, pool: asyncpg.Pool) -> asyncpg.Pool:
    """A clean database (and a flushed Redis) for this test; the shared pool to read it."""
    if not (stack.servers.get("postgres") and not stack.postgres.running):
        tables = ", ".join(f"payment_service.{t}" for t in TABLES)
        await pool.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        await pool.execute(RESET_CURSORS)
    if stack.servers.get("redis") is None or stack.redis.running:
        r = aioredis.from_url(stack.redis_url)
        try:
            await r.flushdb()
        finally:
            await r.aclose()
    return pool


@pytest.fixture
async def make_client(
    db: asyncpg.Pool, stack: TestStack
) -> AsyncIterator[Callable[..., Awaitable[TestClient[Any, Any]]]]:
    """Build the real app through its factory with settings overrides; closes what it made."""
    from gateway.app import create_app

    clients: list[TestClient[Any, Any]] = []

    async def factory(
        settings: Settings | None = None,
        *,
        database_gauges: bool = True,
        **overrides: Any,
    ) -> TestClient[Any, Any]:
        s = settings or make_settings(stack, **overrides)
        if s.kafka_topic.startswith("payment.events."):
            await ensure_topic(s)
        # database_gauges=False: what `paygate serve` builds in a host's extra processes.
        app = create_app(s, database_gauges=database_gauges)
        client = TestClient(AppServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield factory
    for c in reversed(clients):
        await c.close()


@pytest.fixture
async def client(
    make_client: Callable[..., Awaitable[TestClient[Any, Any]]],
) -> TestClient[Any, Any]:
    return await make_client()


async def wait_for(
    condition: Callable[[], Awaitable[Any]], timeout: float = 10.0, interval: float = 0.05
) -> Any:
    """Poll an async condition until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        await asyncio.sleep(interval)
