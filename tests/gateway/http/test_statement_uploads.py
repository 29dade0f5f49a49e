"""Statement uploads through the real app: slow clients that go away never hold a database
connection (issue 28, item 4), and the upload's size, line and time limits answer 413/408.

The wedge this reproduces: each upload took a pool connection before reading its body and,
when the client vanished, asked the pool for a second one (no timeout) to mark the run
failed, while the client's ConnectionResetError was taken for a lost database."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from gateway import appkeys
from tests.conftest import wait_for
from tests.gateway.http.ops_helpers import auth
from tests.webhooks import payment_doc, post_webhook

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]
PATH = "/api/v1/reconciliation/statements"
_T = aiohttp.ClientTimeout(total=5)


async def slow_upload(client: TestClient[Any, Any], lines: int) -> asyncio.StreamWriter:
    """Headers promising a megabyte, the CSV header and a few lines, then nothing more."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    _READERS[writer] = reader
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: {client.host}\r\n"
        f"Authorization: {auth(client)['Authorization']}\r\n"
        "Content-Type: text/csv\r\nContent-Length: 1000000\r\n\r\n"
        "reference_number,amount,payment_date\r\n"
    )
    writer.write(head.encode())
    for i in range(lines):
        writer.write(f"SLOW-{i},1.00,2026-11-01\r\n".encode())
    await writer.drain()
    return writer


_READERS: dict[asyncio.StreamWriter, asyncio.StreamReader] = {}


async def _response(client: TestClient[Any, Any], writer: asyncio.StreamWriter) -> bytes:
    """What the server answered on this connection (it closes it after an error)."""
    return await asyncio.wait_for(_READERS.pop(writer).read(65536), timeout=10)


async def test_slow_uploads_then_gone_clients_leave_the_pool_free(
    make_client: MakeClient, db: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(db_pool_max=4)
    pool = client.server.app[appkeys.POOL]
    caplog.set_level(logging.WARNING)
    writers = [await slow_upload(client, 3) for _ in range(8)]  # twice the pool
    # Every upload reached its handler: then the clients vanish.
    server = client.server.runner.server
    await wait_for(lambda: _true(server.requests_count >= 8), timeout=10)
    for w in writers:
        w.transport.abort()  # a reset, as a client that crashed
    # Every connection the pool may lend is lent again promptly: nothing is wedged.
    await wait_for(lambda: _ready(client), timeout=10)
    answers = await asyncio.gather(*(
        client.get("/api/v1/payments", params={"limit": "1"}, headers=auth(client), timeout=_T)
        for _ in range(8)
    ))  # fmt: skip
    assert [a.status for a in answers] == [200] * 8
    status, data, _ = await post_webhook(client, payment_doc("AFTER-SLOW-UPLOADS"))
    assert status == 201, data
    assert pool.get_size() <= 4
    assert not [r for r in caplog.records if "database connection lost" in r.getMessage()]
    assert await db.fetchval("SELECT count(*) FROM payment_service.reconciliation_runs") == 0


async def _ready(client: TestClient[Any, Any]) -> bool:
    resp = await client.get("/health/ready", timeout=_T)
    return resp.status == 200


async def _true(value: bool) -> bool:
    return value


async def test_a_statement_past_its_size_or_line_limit_is_413_and_nothing_is_imported(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    client = await make_client(reconcile_max_statement_bytes=4096, reconcile_max_line_bytes=200)
    head = "reference_number,amount,payment_date\n"
    big = head + "".join(f"BIG-{i:06d},1.00,2026-11-01\n" for i in range(400))  # ~11 kB
    for body, chunked, code in (
        (big, False, "statement_too_large"),  # Content-Length says so: refused at once
        (big, True, "statement_too_large"),  # no length: refused when the bytes pass it
        (head + "LONG," + "9" * 300 + ",2026-11-01\n", False, "statement_line_too_long"),
    ):

        async def stream(text: str = body) -> Any:
            yield text.encode()

        resp = await client.post(
            PATH, data=stream() if chunked else body.encode(), headers=auth(client)
        )
        answer = await resp.json()
        assert (resp.status, answer["error"]) == (413, code), answer
    assert await db.fetchval("SELECT count(*) FROM payment_service.reconciliation_runs") == 0


async def test_an_upload_slower_than_its_deadline_is_408(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    client = await make_client(reconcile_upload_timeout_seconds=0.5)
    writer = await slow_upload(client, 1)  # and then nothing: the deadline answers
    reader = await _response(client, writer)
    assert reader.startswith(b"HTTP/1.1 408"), reader[:200]
    assert b"request_timeout" in reader
    writer.close()
    assert await db.fetchval("SELECT count(*) FROM payment_service.reconciliation_runs") == 0


async def test_a_statement_slower_than_a_webhook_body_but_within_its_own_deadline_imports(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    """Every route's body has CLIENT_TIMEOUT_SECONDS except a statement upload, which is
    spooled to a file and has RECONCILE_UPLOAD_TIMEOUT_SECONDS: a large statement over a
    slow link is not cut off at a webhook's deadline."""
    client = await make_client(client_timeout_seconds=0.3, reconcile_upload_timeout_seconds=30)

    async def trickle() -> Any:
        yield b"reference_number,amount,payment_date\n"
        for i in range(5):
            await asyncio.sleep(0.25)  # the trickle itself: 1.25 s in all, past 0.3 s
            yield f"TRICKLE-{i},1.00,2026-11-01\n".encode()

    resp = await client.post(PATH, data=trickle(), headers=auth(client), timeout=_T)
    answer = await resp.json()
    assert resp.status == 201, answer
    assert await db.fetchval("SELECT count(*) FROM payment_service.reconciliation_runs") == 1
