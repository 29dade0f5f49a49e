"""Delivery ids that no signature covers (issue 28, item 12): `X-GitHub-Delivery`,
`X-Shopify-Webhook-Id`, `x-razorpay-event-id` and `Idempotency-Key` travel beside the
signed body, so anyone who holds one signed body can send it again with any of them.
They are kept for the record, never used as a key that could answer or drop another
delivery, and a signed id (the scheme's, or the body's `event_id`) always wins."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
from aiohttp.test_utils import TestClient

from gateway.ingest.signatures import sign
from tests.webhooks import payment_doc

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
SECRET = "github-plain-secret-for-tests"


async def _github(client: TestClient[Any, Any], doc: dict[str, Any], **headers: str) -> Any:
    body = orjson.dumps(doc)
    signed = sign("github", SECRET.encode(), body, now=int(time.time()),
                  delivery_id=headers.pop("X-GitHub-Delivery", str(uuid.uuid4())))  # fmt: skip
    signed.update(headers)
    signed["Content-Type"] = "application/json"
    resp = await client.post("/api/v1/payments/webhook", data=body, headers=signed)
    return resp.status, await resp.json(content_type=None)


async def _github_client(make_client: ClientFactory) -> TestClient[Any, Any]:
    return await make_client(webhook_scheme="github", webhook_secret=(SECRET,))


async def test_an_unsigned_delivery_header_never_answers_another_body(
    make_client: ClientFactory, db: asyncpg.Pool
) -> None:
    client = await _github_client(make_client)
    first, second = payment_doc(), payment_doc()
    status, a = await _github(client, first, **{"X-GitHub-Delivery": "d-1"})
    assert status == 201, a
    # Another signed body sent with the same unsigned id is its own delivery.
    status, b = await _github(client, second, **{"X-GitHub-Delivery": "d-1"})
    assert (status, b["status"]) == (201, "created"), b
    assert b["payment_id"] != a["payment_id"]
    for header in ("Idempotency-Key", "X-Shopify-Webhook-Id"):
        status, c = await _github(client, payment_doc(), **{header: "k-1"})
        assert status == 201, c
        status, d = await _github(client, payment_doc(), **{header: "k-1"})
        assert (status, d["status"]) == (201, "created"), (header, d)
    count = await db.fetchval("SELECT count(*) FROM payment_service.payments")
    assert count == 6


async def test_an_unsigned_id_never_drops_a_parked_update(
    make_client: ClientFactory, db: asyncpg.Pool
) -> None:
    client = await _github_client(make_client)
    refs = [f"P-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    for ref in refs:
        status, body = await _github(
            client, {"reference_number": ref, "status": "failed"}, **{"X-GitHub-Delivery": "same"}
        )
        assert (status, body["status"]) == (202, "deferred"), body
    parked = await db.fetch(
        "SELECT reference_number FROM payment_service.pending_status_updates ORDER BY 1"
    )
    assert [r["reference_number"] for r in parked] == sorted(refs)


async def test_the_signed_body_event_id_wins_over_an_unsigned_header(
    make_client: ClientFactory, db: asyncpg.Pool
) -> None:
    client = await _github_client(make_client)
    doc = payment_doc(event_id="evt_signed_1")
    status, body = await _github(client, doc, **{"Idempotency-Key": "idem-1"})
    assert status == 201, body
    recorded = await db.fetchval("SELECT delivery_id FROM payment_service.webhook_events")
    assert recorded == "evt_signed_1"
    # The signed id is a key: the same event under another unsigned id is answered from it.
    status, again = await _github(client, doc, **{"Idempotency-Key": "idem-2"})
    assert (status, again["payment_id"]) == (200, body["payment_id"])
