"""Who may call a route is decided from the route aiohttp matched, never from the path
text (issue 28, item 1: `GET /api/v1/payments/webhook%2FINV-7` read a payment without a
token). Every registered route is walked with encoded, double-encoded and dot-segment
spellings of its path; whatever route each spelling reaches, the answer is that route's
gate's."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from gateway import appkeys
from gateway.app import create_app
from gateway.http import routes
from gateway.http.console.session import COOKIE, new_session
from gateway.http.context import access_of, add_route, check_routes
from gateway.security.access import Access
from gateway.security.auth import READ, mint_token
from tests import stack as stack_mod
from tests.conftest import make_settings
from tests.webhooks import payment_doc, post_webhook

ADMIN = "route-access-admin-secret-0123456789abcdef"
SAMPLES = {
    "key": "INV-7",
    "channel": "INV-7",
    "delivery_id": "1",
    "run_id": "00000000-0000-0000-0000-000000000000",
    "kind": "unmatched_statement",
    "item_id": "1",
    "payment": "INV-7",
    "name": "console.css",
    "action": "resolve",
}
SESSION_REFUSAL = {"GET": 303, "POST": 401}  # no session: pages redirect, actions refuse


def concrete(canonical: str) -> str:
    return re.sub(r"\{(\w+)[^}]*\}", lambda m: SAMPLES[m.group(1)], canonical)


def spellings(path: str, open_paths: list[str]) -> set[str]:
    """`path` as an attacker may spell it: encoded and double-encoded slashes and
    letters, dot segments (plain and encoded), and open routes' paths leading to it."""
    segs = path.strip("/").split("/")
    out = {path}
    for i in range(1, len(segs)):
        left, right = "/".join(segs[:i]), "/".join(segs[i:])
        for joint in ("%2F", "%2f", "%252F", "/./", "/x/../", "/x/%2E%2E/", "/x%2F..%2F"):
            out.add(f"/{left}{joint}{right}")
    for i, seg in enumerate(segs):
        if seg[:1].isalpha():
            once = f"%{ord(seg[0]):02X}{seg[1:]}"
            for spelled in (once, "%25" + once[1:]):
                out.add("/" + "/".join([*segs[:i], spelled, *segs[i + 1 :]]))
    for opened in open_paths:
        if opened != path:
            out.add(opened + "/.." * (opened.count("/")) + path)
            out.add(opened + "%2F" + path.lstrip("/").replace("/", "%2F"))
            out.add(opened + "/" + path.rsplit("/", 1)[-1])
    return out


class Walker:
    """The app as create_app builds it, telling the test which route each request matched."""

    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client
        self.seen: dict[str, tuple[str, Access | None]] = {}

    async def send(self, method: str, target: str, headers: dict[str, str]) -> int:
        server = self.client.server
        url = URL.build(scheme="http", host=server.host, port=server.port, path=target,
                        encoded=True)  # fmt: skip
        probe = f"{method} {target} {len(self.seen)}"
        async with self.client.session.request(
            method, url, headers={**headers, "X-Walk": probe}, allow_redirects=False,
            data=b"" if method == "POST" else None,
        ) as resp:  # fmt: skip
            await resp.read()
            raw, access = self.seen.pop(probe, (None, None))
            assert raw == target, f"the client changed {target!r} into {raw!r}: nothing tested"
            self.last_access = access
            return resp.status


@pytest.fixture
async def walker(stack: stack_mod.TestStack, db: asyncpg.Pool) -> AsyncIterator[Walker]:
    app = create_app(make_settings(stack, admin_jwt_secret=ADMIN))
    walker: Walker

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        handler = request.match_info.route.handler
        walker.seen[request.headers.get("X-Walk", "")] = (request.raw_path, access_of(handler))

    app.on_response_prepare.append(record)
    client = TestClient(TestServer(app))
    await client.start_server()
    walker = Walker(client)
    try:
        yield walker
    finally:
        await client.close()


def registered(app: web.Application) -> list[tuple[str, str, Access]]:
    out = []
    for route in app.router.routes():
        access = access_of(route.handler)
        assert access is not None, route  # check_routes guarantees this; the walk relies on it
        resource = route.resource
        # the catch-all ("/{path}") is skipped: every spelling of every path is its own
        if route.method in ("GET", "POST") and resource and resource.canonical != "/{path}":
            out.append((route.method, concrete(resource.canonical), access))
    return out


def refusal(access: Access | None, method: str, *, reader: bool) -> int | None:
    """What the gate answers this caller on a route of `access` (None: it lets them on)."""
    if access in (Access.OPS_READ, Access.OPS_WRITE):
        if not reader:
            return 401
        return 403 if access is Access.OPS_WRITE else None
    if access in (Access.CONSOLE_SESSION, Access.CONSOLE_READ, Access.CONSOLE_WRITE):
        if not reader:
            return SESSION_REFUSAL[method]
        return 403 if access is Access.CONSOLE_WRITE else None
    return None


def reader_headers() -> dict[str, str]:
    token = mint_token(ADMIN, "rita", [READ])
    cookie, _ = new_session(ADMIN, token)
    return {"Authorization": f"Bearer {token}", "Cookie": f"{COOKIE}={cookie}"}


async def test_every_route_and_every_spelling_of_its_path_gets_its_gate(walker: Walker) -> None:
    table = registered(walker.client.server.app)
    assert len(table) >= 40, "the walk must cover the whole route table"
    open_paths = sorted({p for _, p, a in table if a in (Access.PUBLIC, Access.SIGNED,
                                                         Access.CONSOLE_SIGN_IN)})  # fmt: skip
    wrong: list[str] = []
    reached: set[Access | None] = set()
    for method, path, _ in table:
        for target in sorted(spellings(path, open_paths)):
            for reader in (False, True):
                status = await walker.send(method, target, reader_headers() if reader else {})
                access = walker.last_access
                reached.add(access)
                expected = refusal(access, method, reader=reader)
                if expected is not None and status != expected:
                    who = "reader" if reader else "anonymous"
                    wrong.append(f"{who} {method} {target} -> {access}: {status} != {expected}")
                open_route = access in (Access.PUBLIC, Access.CONSOLE_SIGN_IN)
                if open_route and status == 401:  # refused as if it were another route
                    wrong.append(f"{method} {target} -> {access}: refused with {status}")
    wrong.sort(key=lambda w: "refused with" in w)  # a gate too lenient first
    assert not wrong, f"{len(wrong)} wrong answers:\n" + "\n".join(wrong[:12])
    assert {Access.OPS_READ, Access.OPS_WRITE, Access.CONSOLE_READ, Access.PUBLIC} <= reached


async def test_the_encoded_slash_no_longer_reads_a_payment(
    make_client: Any, db: asyncpg.Pool
) -> None:
    client = await make_client()
    # the router hands the handler {key} decoded: "webhook/INV-7"
    status, _, _ = await post_webhook(client, payment_doc("webhook/INV-7"))
    assert status == 201
    url = URL.build(scheme="http", host=client.server.host, port=client.server.port,
                    path="/api/v1/payments/webhook%2FINV-7", encoded=True)  # fmt: skip
    async with client.session.get(url) as resp:
        body = await resp.json()
    assert resp.status == 401, body
    assert body["error"] == "unauthorized"
    assert resp.headers["Cache-Control"] == "no-store"


def test_a_route_must_declare_its_access() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    with pytest.raises(TypeError):
        routes.Route("GET", "/api/v1/undeclared", handler)  # type: ignore[call-arg]
    app = web.Application()
    with pytest.raises(TypeError, match="declare its access"):
        add_route(app, "GET", "/api/v1/undeclared", handler, None)  # type: ignore[arg-type]


def test_the_app_refuses_to_build_with_an_undeclared_or_ungated_route(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings_offline()

    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app = create_app(settings)
    app.router.add_get("/api/v1/sneaky", handler)  # outside the request context
    with pytest.raises(RuntimeError, match="outside the request context"):
        check_routes(app)

    app = create_app(settings)
    del app[appkeys.ACCESS_GATES][Access.OPS_WRITE]
    with pytest.raises(RuntimeError, match="ops:write"):
        check_routes(app)

    monkeypatch.setattr(
        routes, "ROUTES", (*routes.ROUTES, routes.Route("GET", "/x", handler, Access.PUBLIC))
    )
    create_app(settings)  # a declared route builds
    gates = dict.fromkeys(Access)  # every access "open": only PUBLIC and SIGNED may be
    app = create_app(settings)
    app[appkeys.ACCESS_GATES] = gates
    with pytest.raises(RuntimeError, match="no gate for the access ops:read"):
        check_routes(app)


def make_settings_offline() -> Any:
    from gateway.config import Settings

    return Settings.from_env(
        {}, database_url="postgresql://paygate@127.0.0.1:1/none", admin_jwt_secret=ADMIN
    )


def test_state_changing_routes_need_more_than_read() -> None:
    for route in routes.ROUTES:
        if route.method != "GET":
            assert route.access not in (Access.OPS_READ, Access.CONSOLE_READ), route.path
