"""Building and sending signed webhooks in tests."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp.test_utils import TestClient

from gateway.ingest.signatures import decode_secret, sign
from tests.conftest import TEST_SECRET

GENERIC_KEY = decode_secret("standard", TEST_SECRET)


# One instant for every default document of a test session: two documents of one reference
# built a second apart had different payment dates, so the second was a 409 conflict
# instead of the duplicate or status change the test meant (a flake at a second boundary).
SESSION_NOW = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def payment_doc(ref: str | None = None, **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "reference_number": ref or f"REF-{uuid.uuid4().hex[:16]}",
        "loan_account_number": "LA-0001",
        "cif": "CIF-0001",
        "amount": "125.50",
        "payment_date": SESSION_NOW,
        "payment_channel": "bank_transfer",
        "metadata": {"note": "test"},
    }
    doc.update(fields)
    return doc


def signed_headers(
    body: bytes, *, key: bytes = GENERIC_KEY, scheme: str = "standard", now: int | None = None
) -> dict[str, str]:
    headers = sign(
        scheme,
        key,
        body,
        now=int(time.time()) if now is None else now,
        delivery_id=f"msg_{uuid.uuid4().hex}",
    )
    headers["Content-Type"] = "application/json"
    return headers


async def post_webhook(
    client: TestClient[Any, Any],
    doc: Any,
    *,
    channel: str | None = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    body = raw if raw is not None else orjson.dumps(doc)
    path = "/api/v1/payments/webhook" + (f"/{channel}" if channel else "")
    resp = await client.post(path, data=body, headers=headers or signed_headers(body))
    data = await resp.json(content_type=None)
    return resp.status, data, dict(resp.headers)


def dedup_hits(layer: str) -> float:
    """paygate_dedup_hits_total for one layer, with this process's held counts flushed."""
    from prometheus_client import REGISTRY

    from gateway.observability import metrics

    metrics.flush_pending()
    return REGISTRY.get_sample_value("paygate_dedup_hits_total", {"layer": layer}) or 0.0
