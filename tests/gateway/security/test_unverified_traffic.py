"""Unsigned requests cannot spend a channel's rate limit (issue 28, item 3: five
unsigned POSTs to a channel at 1/s burst 2 answered 401 401 429 429 429, and the next
correctly signed delivery got 429). The channel's bucket is charged only for verified
deliveries; a source whose deliveries fail verification is limited on its own bucket,
before its next body is read."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from tests.webhooks import payment_doc, post_webhook, signed_headers

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]
PROXIES = ("127.0.0.0/8", "::1/128")  # so each test request can name its source
STRANGER = {"X-Forwarded-For": "198.51.100.7"}
PROVIDER = {"X-Forwarded-For": "203.0.113.5"}


def unverified_refusals(channel: str) -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value("paygate_unverified_refused_total", {"channel": channel})
    return value or 0.0


async def count(db: asyncpg.Pool) -> int:
    return int(await db.fetchval("SELECT count(*) FROM payment_service.payments"))


@pytest.mark.parametrize("backend", ["redis", "local"])  # shared (leased) and per-process buckets
async def test_unsigned_requests_leave_the_channel_budget_to_the_provider(
    make_client: MakeClient, db: asyncpg.Pool, tmp_path: Path, backend: str
) -> None:
    channels = tmp_path / "channels.toml"
    channels.write_text("[channels.generic]\nrate_per_second = 0.2\nburst = 2\n")
    client = await make_client(
        channels_file=str(channels), trusted_proxies=PROXIES, rate_limit_backend=backend,
        unverified_rate_per_source=0.2, unverified_burst_per_source=2,
    )  # fmt: skip
    before = unverified_refusals("generic")
    answers = []
    for _ in range(5):
        body = orjson.dumps(payment_doc())
        headers = {"Content-Type": "application/json", **STRANGER}  # and no signature
        resp = await client.post("/api/v1/payments/webhook", data=body, headers=headers)
        answers.append((resp.status, (await resp.json())["error"]))
    assert answers == [
        (401, "invalid_signature"), (401, "invalid_signature"),
        (429, "unverified_rate_limited"), (429, "unverified_rate_limited"),
        (429, "unverified_rate_limited"),
    ]  # fmt: skip
    assert unverified_refusals("generic") == before + 3

    # The provider's signed deliveries still have the channel's whole burst ...
    statuses = []
    for _ in range(3):
        body = orjson.dumps(payment_doc())
        status, data, _ = await post_webhook(
            client, None, raw=body, headers={**signed_headers(body), **PROVIDER}
        )
        statuses.append((status, data.get("error")))
    # ... and only their own deliveries spend it.
    assert statuses == [(201, None), (201, None), (429, "rate_limited")]
    assert await count(db) == 2


async def test_a_refused_source_is_refused_before_its_body_is_read(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    client = await make_client(
        trusted_proxies=PROXIES, max_body_bytes=4096,
        unverified_rate_per_source=0.01, unverified_burst_per_source=1,
    )  # fmt: skip
    body = orjson.dumps(payment_doc())
    resp = await client.post("/api/v1/payments/webhook", data=body, headers=STRANGER)
    assert resp.status == 401
    huge = b"x" * 100_000  # past MAX_BODY_BYTES: reading it would be a 413
    resp = await client.post("/api/v1/payments/webhook", data=huge, headers=STRANGER)
    assert (resp.status, (await resp.json())["error"]) == (429, "unverified_rate_limited")
    assert int(resp.headers["Retry-After"]) >= 1
    body = orjson.dumps(payment_doc())  # another source is not affected
    status, _, _ = await post_webhook(
        client, None, raw=body, headers={**signed_headers(body), **PROVIDER}
    )
    assert status == 201
