"""Every route runs in the request context (gateway.http.context), and paths or methods no
route serves still get the JSON error body and a request id."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway import appkeys
from gateway.app import create_app
from gateway.http.context import in_context, with_request_context
from gateway.security.access import Access
from tests.conftest import make_settings


async def test_every_route_runs_in_the_request_context(client: Any) -> None:
    routes = list(client.server.app.router.routes())
    assert len(routes) > 10
    assert all(in_context(r.handler) for r in routes)


async def test_a_route_outside_the_request_context_stops_start_up(stack: Any) -> None:
    async def bypass(request: web.Request) -> web.Response:
        return web.Response(text="no gates ran")

    app = create_app(make_settings(stack))
    app.router.add_get("/api/v1/bypass", bypass)
    client = TestClient(TestServer(app))
    with pytest.raises(RuntimeError, match="/api/v1/bypass"):
        await client.start_server()
    await client.close()


async def test_unknown_path_is_a_json_404_with_a_request_id(client: Any) -> None:
    for path in ("/nope", "/api/v1/payments/webhook/generic/extra", "/api/v2/anything"):
        resp = await client.get(path)
        assert resp.status == 404, path
        assert resp.content_type == "application/json"
        assert (await resp.json())["error"] == "not_found"
        assert resp.headers["X-Request-ID"]


async def test_wrong_method_is_a_json_405_naming_the_allowed_ones(client: Any) -> None:
    resp = await client.get("/api/v1/payments/webhook")
    assert resp.status == 405
    assert (await resp.json())["error"] == "method_not_allowed"
    assert resp.headers["Allow"] == "POST"
    assert resp.headers["X-Request-ID"]

    resp = await client.delete("/health/live")
    assert resp.status == 405
    assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD"}


async def test_known_routes_are_still_served_beside_the_fallback(client: Any) -> None:
    assert (await client.get("/health/live")).status == 200
    resp = await client.post("/api/v1/payments/webhook/no-such-channel", data=b"{}")
    assert resp.status == 404
    assert (await resp.json())["error"] == "unknown_channel"


@pytest.mark.parametrize(
    "exc, status, code",
    [
        (asyncpg.ConnectionDoesNotExistError("closed mid-operation"), 503, "database_unavailable"),
        (asyncpg.ReadOnlySQLTransactionError("read-only"), 503, "database_unavailable"),
        (asyncpg.CannotConnectNowError("in recovery"), 503, "database_unavailable"),
        (ConnectionRefusedError(), 503, "unavailable"),
        (ValueError("a bug"), 500, "internal_error"),
    ],
)
async def test_a_database_that_cannot_take_the_work_is_a_503_anywhere_in_a_handler(
    exc: Exception, status: int, code: str
) -> None:
    async def failing(request: web.Request) -> web.Response:
        raise exc

    app = web.Application()
    app[appkeys.ACCESS_GATES] = {Access.PUBLIC: None}
    app.router.add_get("/fails", with_request_context(failing, Access.PUBLIC))
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/fails")
        assert resp.status == status
        assert (await resp.json())["error"] == code
        if status == 503:
            assert int(resp.headers["Retry-After"]) >= 1
