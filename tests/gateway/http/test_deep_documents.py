"""A deeply nested document is shown as its raw text (issue 28, item 7: a signed payment
with 600 nested lists in an ignored field was recorded, then its delivery answered 500 in
the API and the console: the pretty-printers ran out of recursion)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
from aiohttp.test_utils import TestClient

from gateway import appkeys
from gateway.http.console.session import COOKIE, new_session
from gateway.security.auth import READ, mint_token
from tests.gateway.http.ops_helpers import get
from tests.webhooks import payment_doc, post_webhook, signed_headers

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]
DEPTH = 600


async def test_a_deep_document_is_shown_as_its_raw_text(
    client: TestClient[Any, Any], db: asyncpg.Pool
) -> None:
    doc = payment_doc("DEEP-1")
    raw = orjson.dumps(doc)[:-1] + b',"ignored":' + b"[" * DEPTH + b"]" * DEPTH + b"}"
    status, _, _ = await post_webhook(client, None, raw=raw, headers=signed_headers(raw))
    assert status == 201
    ident = await db.fetchval("SELECT id FROM payment_service.webhook_events")

    status, detail = await get(client, f"/api/v1/deliveries/{ident}")
    assert status == 200, detail
    body = detail["delivery"]["body"]
    assert body["raw"] == raw.decode() and body["pretty"] is None

    secret = client.server.app[appkeys.SETTINGS].admin_jwt_secret
    cookie, _ = new_session(secret, mint_token(secret, "olga", [READ]))
    resp = await client.get(f"/console/deliveries/{ident}", cookies={COOKIE: cookie})
    page = await resp.text()
    assert resp.status == 200, page[:300]
    assert "[[[[[[[[" in page and "DEEP-1" in page
