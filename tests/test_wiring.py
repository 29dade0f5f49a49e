"""Nothing that guards or serves paygate can vanish silently: the app as `create_app`
builds it refuses an unauthenticated ops request, and every worker and command the
docs name is registered."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.config import Settings

OPS_ROUTES = (
    ("GET", "/api/v1/payments/stats"),
    ("GET", "/api/v1/dlq"),
    ("POST", "/api/v1/dlq/replay"),
    ("POST", "/api/v1/reconciliation/statements"),
    ("GET", "/api/v1/reconciliation/runs/00000000-0000-0000-0000-000000000000"),
)
WORKERS = {"outbox", "staging", "partitions", "status_poller"}
COMMANDS = {
    "dev",
    "run",
    "serve",
    "worker",
    "migrate",
    "dlq",
    "events",
    "partitions",
    "reconcile",
    "token",
}


def _settings() -> Settings:
    # No database behind it: the token check must refuse before any handler needs one.
    return Settings.from_env(
        {},
        database_url="postgresql://paygate@127.0.0.1:1/none",
        admin_jwt_secret="wiring-test-secret-0123456789abcdef",
    )


@pytest.mark.parametrize(("method", "path"), OPS_ROUTES)
async def test_the_built_app_refuses_an_unauthenticated_ops_request(method: str, path: str) -> None:
    app = create_app(_settings())
    app.cleanup_ctx.clear()  # no servers here: only the route table and the request gates
    app.on_startup.clear()
    async with TestClient(TestServer(app)) as client:
        resp = await client.request(method, path)
        body: dict[str, Any] = await resp.json()
    assert resp.status == 401, (method, path, body)
    assert body["error"] == "unauthorized"


def test_the_built_app_has_its_source_controls() -> None:
    from gateway import appkeys

    app = create_app(_settings())
    for key in (
        appkeys.SOURCE_GUARD,
        appkeys.REPLAY_GUARD,
        appkeys.INFLIGHT,
        appkeys.STATUS_APPLIER,
    ):
        assert key in app, key
    assert app[appkeys.REQUEST_GATES], "no request gate: the ops API would be open"


def test_every_worker_is_registered() -> None:
    from workers.registry import WORKERS as registered

    assert set(registered) == WORKERS


def test_every_command_is_registered() -> None:
    from workers.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == COMMANDS  # type: ignore[arg-type]
