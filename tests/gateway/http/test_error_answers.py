"""Every 4xx is JSON, quoting none of the request, and every ops and console answer is
`Cache-Control: no-store` (issue 28, item 13: aiohttp's own 400 pages echoed request
bytes as text/plain; ops JSON carrying personal data had no Cache-Control)."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.gateway.http.ops_helpers import auth
from tests.rawhttp import exchange
from tests.webhooks import payment_doc, post_webhook

HOST = b"Host: 127.0.0.1\r\n"
MALFORMED = [
    (b"GET /x HTTP/1.1\r\n" + HOST + b"Bad<b>Header\r\n\r\n", b"<b>"),
    (b"G<ET / HTTP/1.1\r\n" + HOST + b"\r\n", b"G<ET"),
    (b"GET /health/live HTTP/1.1\r\n" + HOST + b"X: " + b"q" * 9000 + b"\r\n\r\n", b"qqqq"),
    (b"GET /" + b"q" * 9000 + b" HTTP/1.1\r\n" + HOST + b"\r\n", b"qqqq"),
    (b"POST /api/v1/payments/webhook HTTP/1.1\r\n" + HOST
     + b"Transfer-Encoding: chunked\r\n\r\nzz<i>\r\nabc\r\n0\r\n\r\n", b"<i>"),
    (b"POST /api/v1/payments/webhook HTTP/1.1\r\n" + HOST
     + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nabcde", b"Content-Length: 6"),
]  # fmt: skip


@pytest.mark.parametrize(("request_bytes", "echo"), MALFORMED)
async def test_requests_aiohttp_cannot_parse_get_json_that_quotes_nothing(
    client: TestClient[Any, Any], request_bytes: bytes, echo: bytes
) -> None:
    answer = await exchange(client.server.port, request_bytes)
    assert answer.status in (400, 431), answer
    assert answer.headers["content-type"].startswith("application/json"), answer
    assert answer.json()["error"] in ("bad_request", "headers_too_large")
    assert echo not in answer.body


async def test_a_body_that_cannot_be_decoded_is_a_400_not_a_500(
    client: TestClient[Any, Any], db: asyncpg.Pool
) -> None:
    body = b"\x1f\x8b\x08\x00<i>not gzip at all</i>"  # a gzip header, then nonsense
    answer = await exchange(
        client.server.port,
        b"POST /api/v1/payments/webhook HTTP/1.1\r\n" + HOST
        + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
    )  # fmt: skip
    assert answer.status == 400, answer
    assert answer.json()["error"] == "bad_request"
    assert b"<i>" not in answer.body


async def test_ops_and_console_answers_are_not_stored_by_caches(
    client: TestClient[Any, Any], db: asyncpg.Pool
) -> None:
    status, _, _ = await post_webhook(client, payment_doc("NOSTORE-1"))
    assert status == 201
    answers = [
        await client.get("/api/v1/payments", headers=auth(client)),
        await client.get("/api/v1/payments/NOSTORE-1", headers=auth(client)),
        await client.get("/api/v1/payments"),  # 401
        await client.post("/api/v1/dlq/replay", data=b"[", headers=auth(client)),  # 400
        await client.get("/console/login"),
        await client.get("/console/payments", allow_redirects=False),  # 303 to sign in
    ]
    for resp in answers:
        assert resp.headers.get("Cache-Control") == "no-store", (resp.url, resp.status)
    assert [r.status for r in answers] == [200, 200, 401, 400, 200, 303]


async def test_every_4xx_outside_the_console_is_json(make_client: Any, db: asyncpg.Pool) -> None:
    client = await make_client(max_body_bytes=1024)
    answers = [
        await client.get("/no/such/path"),  # 404
        await client.delete("/api/v1/payments"),  # 405
        await client.post("/api/v1/dlq/replay", data=b"x" * 4096, headers=auth(client)),  # 413
        await client.post("/api/v1/payments/webhook", data=b"{}"),  # 401
    ]
    assert [r.status for r in answers] == [404, 405, 413, 401]
    for resp in answers:
        assert resp.headers["Content-Type"].startswith("application/json"), resp.url
        assert "error" in await resp.json()
