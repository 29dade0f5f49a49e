"""PayPal certificate fetches that an unsigned request can cause are bounded (issue 28,
item 5: the fetch ran before the timestamp check, failures were not cached, the cache
key was the raw URL: six unsigned requests naming case and `#`/`?` variants of one URL
made six parallel fetches). Against a local https certificate host that counts fetches."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from gateway.ingest.schemes import paypal_certs
from tests.conftest import make_settings, wait_for
from tests.paypal_ca import CertServer, cert_server

WEBHOOK_ID = "8PT597110X687430LKGECATA"
BODY = orjson.dumps({"id": "WH-1", "event_type": "PAYMENT.CAPTURE.COMPLETED"})


@pytest.fixture
async def certs(tmp_path: Path) -> AsyncIterator[CertServer]:
    async with cert_server(tmp_path) as server:
        yield server


@pytest.fixture
async def client(make_client: Any, stack: Any, tmp_path: Path, certs: CertServer) -> Any:
    port = certs.host.rsplit(":", 1)[1]
    path = tmp_path / "channels.toml"
    path.write_text(f"""[channels.paypal]
preset = "paypal"
[channels.paypal.verify]
webhook_id = "{WEBHOOK_ID}"
cert_hosts = ["localhost:{port}"]
ca_file = "{certs.ca_file}"
""")
    c: TestClient[Any, Any] = await make_client(make_settings(stack, channels_file=str(path)))
    c.cert_base = f"https://localhost:{port}/v1/notifications/certs/"  # type: ignore[attr-defined]
    return c


def unsigned(cert_url: str, *, age: int = 0) -> dict[str, str]:
    """PayPal's headers with a signature nobody made."""
    sent = datetime.fromtimestamp(time.time() - age, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "PAYPAL-TRANSMISSION-ID": "69cd13f0-d67a-11e5-baa3-778b53f4ae55",
        "PAYPAL-TRANSMISSION-TIME": sent,
        "PAYPAL-TRANSMISSION-SIG": base64.b64encode(b"\x01" * 256).decode(),
        "PAYPAL-CERT-URL": cert_url,
        "PAYPAL-AUTH-ALGO": "SHA256withRSA",
        "Content-Type": "application/json",
    }


async def send(client: Any, headers: dict[str, str]) -> tuple[int, str]:
    resp = await client.post("/api/v1/payments/webhook/paypal", data=BODY, headers=headers)
    doc = await resp.json()
    return resp.status, doc.get("reason") or doc["error"]


async def test_a_stale_transmission_is_refused_before_anything_is_fetched(
    client: Any, certs: CertServer
) -> None:
    stale = unsigned(client.cert_base + "CERT-1", age=301)
    assert await send(client, stale) == (401, "timestamp_out_of_tolerance")
    assert certs.served == []


async def test_spellings_of_one_url_cost_one_fetch(client: Any, certs: CertServer) -> None:
    base = client.cert_base + "CERT-1"
    spelled = [
        base,
        base + "?",
        base + "#",
        base + "?#",
        base.replace("localhost", "LOCALHOST"),
        base.replace("https:", "HTTPS:"),
    ]
    answers = await asyncio.gather(*(send(client, unsigned(url)) for url in spelled))
    assert answers == [(401, "signature_mismatch")] * len(spelled)
    assert certs.served == ["/v1/notifications/certs/CERT-1"]


async def test_a_failed_fetch_is_remembered(client: Any, certs: CertServer) -> None:
    missing = client.cert_base + "missing-1"
    for _ in range(3):
        assert await send(client, unsigned(missing)) == (401, "untrusted_certificate")
    assert certs.served == ["/v1/notifications/certs/missing-1"]


async def test_fetches_are_bounded_at_once_and_per_minute(client: Any, certs: CertServer) -> None:
    at_once = paypal_certs.MAX_CONCURRENT_FETCHES
    certs.hold = asyncio.Event()
    held = [
        asyncio.ensure_future(send(client, unsigned(client.cert_base + f"missing-held-{i}")))
        for i in range(at_once)
    ]
    try:
        await wait_for(lambda: _true(certs.in_flight == at_once))
        # More distinct URLs while those are held: refused at once, nothing fetched.
        for i in range(3):
            url = client.cert_base + f"missing-more-{i}"
            assert await send(client, unsigned(url)) == (503, "certificate_unavailable")
        assert certs.most_at_once == at_once
    finally:
        certs.hold.set()
    assert await asyncio.gather(*held) == [(401, "untrusted_certificate")] * at_once

    answers = []
    for i in range(paypal_certs.MAX_FETCHES_PER_MINUTE + 2):
        answers.append(await send(client, unsigned(client.cert_base + f"missing-minute-{i}")))
    assert len(certs.served) == paypal_certs.MAX_FETCHES_PER_MINUTE
    assert answers[-1] == (503, "certificate_unavailable")


async def _true(value: bool) -> bool:
    return value
