"""Every body has a read deadline and every source a bound on its connections (issue
28, item 8: an unauthenticated `POST /console/login` trickling one byte every 8 s was
still open at 160 s; only the webhook route had a deadline). Raw sockets against the
real app, with CLIENT_TIMEOUT_SECONDS short so each case takes about a second."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import wait_for
from tests.gateway.http.ops_helpers import token
from tests.rawhttp import closed, connection, exchange, read_answer, trickle

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]
DEADLINE = 0.5


def head(method: str, path: str, length: int, **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}",
             *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items())]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/console/login", "application/x-www-form-urlencoded"),  # no session needed
        ("/api/v1/dlq/replay", "application/json"),  # an ops action, with its token
        ("/api/v1/payments/webhook", "application/json"),
    ],
)
async def test_a_trickled_body_is_cut_off_at_the_deadline(
    make_client: MakeClient, db: asyncpg.Pool, path: str, kind: str
) -> None:
    client = await make_client(client_timeout_seconds=DEADLINE)
    extra = {"Authorization": f"Bearer {token(client)}"} if "/dlq/" in path else {}
    async with connection(client.server.port) as (reader, writer):
        writer.write(head("POST", path, 1000, Content_Type=kind, **extra))
        slow = asyncio.ensure_future(trickle(writer, b"a" * 1000, every=0.1))
        try:
            answer = await read_answer(reader, timeout=DEADLINE + 5)
            assert answer.status == 408, answer
            assert b"request_timeout" in answer.body
            assert answer.headers.get("connection", "").lower() == "close"
            assert await closed(reader, timeout=5)
        finally:
            slow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await slow


async def test_a_connection_that_never_finishes_its_headers_is_closed(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    client = await make_client(client_timeout_seconds=DEADLINE)
    async with connection(client.server.port) as (reader, writer):
        writer.write(b"POST /console/login HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        slow = asyncio.ensure_future(trickle(writer, b"X-Slow: " + b"a" * 1000, every=0.1))
        try:
            assert await closed(reader, timeout=DEADLINE + 5)
        finally:
            slow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await slow
    # A connection kept alive past the deadline between its requests is not cut.
    async with connection(client.server.port) as (reader, writer):
        for _ in range(2):
            writer.write(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert (await read_answer(reader)).status == 200
            await asyncio.sleep(DEADLINE * 1.5)  # idle, as a kept-alive client may be


async def test_connections_per_source_are_bounded(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    client = await make_client(max_connections_per_source=2)
    port = client.server.port
    held = [await _open_and_use(port) for _ in range(2)]
    try:
        answer = await exchange(port, b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert answer.status == 429
        assert answer.json()["error"] == "too_many_connections"
    finally:
        for _, writer in held:
            writer.close()

    async def served_again() -> bool:
        try:
            answer = await exchange(port, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        except ConnectionError:
            return False
        return answer.status == 200

    await wait_for(served_again)  # the closed ones are no longer counted


async def _open_and_use(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert (await read_answer(reader)).status == 200  # kept alive, and counted
    return reader, writer
