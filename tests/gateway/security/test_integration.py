"""Source controls, replay protection and ops auth through the real app."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway import appkeys
from gateway.app import create_app
from gateway.http.context import add_route
from gateway.security.access import Access
from gateway.security.auth import PRINCIPAL, READ, WRITE, mint_token
from gateway.security.reload import reload_channels
from tests import stack as stack_mod
from tests.conftest import TEST_SECRET, make_settings, wait_for
from tests.events import queued_count
from tests.webhooks import dedup_hits, payment_doc, post_webhook, signed_headers

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]
ADMIN = "integration-admin-secret-0123456789abcdef"


def channels_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "channels.toml"
    path.write_text(text)
    return str(path)


async def count(db: asyncpg.Pool, table: str) -> int:
    return int(await db.fetchval(f"SELECT count(*) FROM payment_service.{table}"))


async def test_allowlist_refuses_before_the_body_is_read(
    make_client: MakeClient, db: asyncpg.Pool, tmp_path: Path
) -> None:
    path = channels_file(tmp_path, '[channels.generic]\nallow_cidrs = ["192.0.2.0/24"]\n')
    client = await make_client(channels_file=path, max_body_bytes=4096)
    huge = b"x" * 1_000_000  # way past MAX_BODY_BYTES: reading it would be a 413
    resp = await client.post("/api/v1/payments/webhook", data=huge, headers=signed_headers(huge))
    assert resp.status == 403
    assert (await resp.json())["error"] == "source_not_allowed"
    assert await count(db, "payments") == 0


async def test_forwarded_for_counts_only_from_trusted_proxies(
    make_client: MakeClient, db: asyncpg.Pool, tmp_path: Path
) -> None:
    path = channels_file(tmp_path, '[channels.generic]\nallow_cidrs = ["203.0.113.0/24"]\n')
    spoof = {"X-Forwarded-For": "203.0.113.5"}

    untrusting = await make_client(channels_file=path)
    body = orjson.dumps(payment_doc())
    status, data, _ = await post_webhook(
        untrusting, None, raw=body, headers={**signed_headers(body), **spoof}
    )
    assert (status, data["error"]) == (403, "source_not_allowed")

    trusting = await make_client(channels_file=path, trusted_proxies=("127.0.0.0/8", "::1/128"))
    status, data, _ = await post_webhook(
        trusting, None, raw=body, headers={**signed_headers(body), **spoof}
    )
    assert status == 201, data
    body = orjson.dumps(payment_doc())
    status, _, _ = await post_webhook(
        trusting, None, raw=body,
        headers={**signed_headers(body), "X-Forwarded-For": "198.51.100.7"},
    )  # fmt: skip
    assert status == 403
    assert await count(db, "payments") == 1


async def test_rate_limit_answers_429_with_retry_after(
    make_client: MakeClient, db: asyncpg.Pool, tmp_path: Path
) -> None:
    path = channels_file(tmp_path, "[channels.generic]\nrate_per_second = 0.01\nburst = 2\n")
    client = await make_client(channels_file=path)
    statuses = []
    for _ in range(3):
        status, data, headers = await post_webhook(client, payment_doc())
        statuses.append(status)
    assert statuses == [201, 201, 429]
    assert data["error"] == "rate_limited"
    assert 1 <= int(headers["Retry-After"]) <= 100
    assert await count(db, "payments") == 2


async def test_in_flight_bound_sheds_load_with_503(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    client = await make_client(max_in_flight_requests=1)
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"reference_number": '
        await release.wait()
        yield b'"x"}'

    held = asyncio.ensure_future(
        client.post("/api/v1/payments/webhook", data=slow_body(), headers={"webhook-id": "m"})
    )
    bound = client.server.app[appkeys.INFLIGHT]
    try:
        await wait_for(lambda: _true(bound.current == 1))
        body = orjson.dumps(payment_doc())
        status, data, headers = await post_webhook(client, None, raw=body)
        assert (status, data["error"]) == (503, "overloaded")
        assert int(headers["Retry-After"]) >= 1
        resp = await client.get("/health/live")  # not counted
        assert resp.status == 200
    finally:
        release.set()
        first = await held
    assert first.status == 401  # the held request itself was unsigned
    assert bound.current == 0
    body = orjson.dumps(payment_doc())
    status, _, _ = await post_webhook(client, None, raw=body)
    assert status == 201


async def test_replayed_delivery_is_a_duplicate_without_a_second_effect(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    client = await make_client()
    body = orjson.dumps(payment_doc())
    headers = signed_headers(body)
    before = dedup_hits("delivery")
    first = await post_webhook(client, None, raw=body, headers=headers)
    again = await post_webhook(client, None, raw=body, headers=headers)
    assert first[0] == 201
    assert again[0] == 200
    assert again[1] == {"status": "duplicate", "payment_id": first[1]["payment_id"]}
    assert dedup_hits("delivery") == before + 1
    assert await count(db, "payments") == 1
    assert await queued_count(db) == 1


async def _probe(request: web.Request) -> web.Response:
    return web.json_response({"principal": request[PRINCIPAL].subject})


async def ops_client(stack: stack_mod.TestStack, **overrides: Any) -> TestClient[Any, Any]:
    app = create_app(make_settings(stack, **overrides))
    # in the request context and declaring who may call it, as every route must
    add_route(app, "GET", "/api/v1/_probe", _probe, Access.OPS_READ)
    add_route(app, "POST", "/api/v1/_probe", _probe, Access.OPS_WRITE)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_ops_api_needs_a_token_with_the_right_role(
    stack: stack_mod.TestStack, db: asyncpg.Pool
) -> None:
    client = await ops_client(stack, admin_jwt_secret=ADMIN)
    try:
        resp = await client.get("/api/v1/_probe")
        assert resp.status == 401
        assert (await resp.json())["error"] == "unauthorized"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")

        forged = mint_token("some-other-secret-0123456789abcdefgh", "eve", [WRITE])
        resp = await client.get("/api/v1/_probe", headers={"Authorization": f"Bearer {forged}"})
        assert resp.status == 401

        reader = {"Authorization": f"Bearer {mint_token(ADMIN, 'alice', [READ])}"}
        resp = await client.get("/api/v1/_probe", headers=reader)
        assert (resp.status, await resp.json()) == (200, {"principal": "alice"})
        resp = await client.post("/api/v1/_probe", headers=reader)
        assert resp.status == 403
        assert (await resp.json())["error"] == "forbidden"

        writer = {"Authorization": f"Bearer {mint_token(ADMIN, 'bob', [WRITE])}"}
        resp = await client.post("/api/v1/_probe", headers=writer)
        assert (resp.status, await resp.json()) == (200, {"principal": "bob"})

        resp = await client.get("/health/live")  # outside /api/v1/: open
        assert resp.status == 200
    finally:
        await client.close()


async def test_ops_api_is_closed_without_a_jwt_secret(
    stack: stack_mod.TestStack, db: asyncpg.Pool
) -> None:
    client = await ops_client(stack, admin_jwt_secret="")
    try:
        token = mint_token(ADMIN, "alice", [WRITE])
        resp = await client.get("/api/v1/_probe", headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 503
        assert (await resp.json())["error"] == "ops_api_disabled"
        body = orjson.dumps(payment_doc())  # webhooks are unaffected
        status, _, _ = await post_webhook(client, None, raw=body)
        assert status == 201
    finally:
        await client.close()


ROTATED = "whsec_" + "cm90YXRlZC1zZWNyZXQtZm9yLXBheWdhdGUtdGVzdHMtMDI="


async def test_reload_swaps_channels_and_keeps_them_on_a_bad_file(
    make_client: MakeClient, db: asyncpg.Pool, tmp_path: Path, caplog: Any
) -> None:
    from gateway.ingest.signatures import decode_secret

    path = channels_file(tmp_path, f'[channels.partner]\nsecrets = ["{TEST_SECRET}"]\n')
    client = await make_client(channels_file=path)
    app = client.server.app
    old_key = decode_secret("standard", TEST_SECRET)
    new_key = decode_secret("standard", ROTATED)

    body = orjson.dumps(payment_doc())
    status, _, _ = await post_webhook(client, None, raw=body, channel="partner",
                                      headers=signed_headers(body, key=new_key))  # fmt: skip
    assert status == 401

    Path(path).write_text(f'[channels.partner]\nsecrets = ["{ROTATED}", "{TEST_SECRET}"]\n')
    with caplog.at_level("INFO", logger="paygate.security.reload"):
        assert reload_channels(app[appkeys.CHANNELS], app[appkeys.SETTINGS])
    assert "partner (keys=2)" in caplog.text
    assert ROTATED not in caplog.text and TEST_SECRET not in caplog.text
    for key in (new_key, old_key):
        body = orjson.dumps(payment_doc())
        status, _, _ = await post_webhook(client, None, raw=body, channel="partner",
                                          headers=signed_headers(body, key=key))  # fmt: skip
        assert status == 201

    caplog.clear()
    Path(path).write_text(f'[channels.partner]\nsecrets = ["{ROTATED}"]\nallow_cidrs = ["nope"]\n')
    with caplog.at_level("ERROR", logger="paygate.security.reload"):
        assert not reload_channels(app[appkeys.CHANNELS], app[appkeys.SETTINGS])
    assert "keeping the previous configuration" in caplog.text
    assert ROTATED not in caplog.text
    assert len(app[appkeys.CHANNELS].get("partner").keys) == 2  # type: ignore[union-attr]


async def test_sighup_triggers_a_reload(
    make_client: MakeClient, db: asyncpg.Pool, tmp_path: Path
) -> None:
    path = channels_file(tmp_path, f'[channels.partner]\nsecrets = ["{TEST_SECRET}"]\n')
    client = await make_client(channels_file=path)
    channels = client.server.app[appkeys.CHANNELS]
    late = f'[channels.late]\nsecrets = ["{ROTATED}"]\n'
    Path(path).write_text(f'[channels.partner]\nsecrets = ["{TEST_SECRET}"]\n' + late)
    os.kill(os.getpid(), signal.SIGHUP)
    assert await wait_for(lambda: _has(channels, "late"))


async def _has(channels: Any, name: str) -> bool:
    return name in channels


async def _true(value: bool) -> bool:
    return value
