"""Issue 28 items 6 and 9 through the real app: signing out revokes the session (its old
cookie and CSRF token stop working), every role may sign out, behind a trusted TLS proxy
the cookie is Secure, the Origin check and HSTS follow https, and no link can make the
console say something or add a parameter to another link."""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Awaitable, Callable
from http.cookies import Morsel
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from gateway import appkeys
from gateway.security import tokens
from gateway.security.auth import READ, WRITE
from tests.gateway.http.console.test_console import base, sign_in, token_for

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]
QUICK_MS = 5000


async def _dead_letter(db: asyncpg.Pool) -> None:
    await db.execute(
        """INSERT INTO payment_service.outbox (event_id, event_type, topic, key, payload,
               attempts, dead_lettered_at)
           VALUES ($1, 'payment.recorded', 'payment.events', 'R', '{}', 10, now())""",
        uuid.uuid4(),
    )


async def test_signing_out_revokes_the_session_and_its_csrf_token(
    client: TestClient[Any, Any], db: asyncpg.Pool, page: Any
) -> None:
    page.set_default_timeout(QUICK_MS)
    await _dead_letter(db)
    await sign_in(page, client, [WRITE])
    await page.goto(base(client) + "/console/dead-letters")
    old = [c for c in await page.context.cookies() if c["name"] == "paygate_session"]
    csrf = await page.get_attribute("header input[name=csrf_token]", "value")
    await page.click("text=Sign out")
    assert page.url.endswith("/console/login")

    await page.context.add_cookies(old)  # the cookie kept (copied, stolen) after sign-out
    read = await page.request.get(base(client) + "/console/payments", max_redirects=0)
    assert read.status == 303 and read.headers["location"].endswith("/console/login")
    replay = await page.request.post(base(client) + "/console/dead-letters/replay",
                                     form={"all": "1", "csrf_token": csrf or ""},
                                     max_redirects=0)  # fmt: skip
    assert replay.status == 401
    still_dead = "SELECT count(*) FROM payment_service.outbox WHERE dead_lettered_at IS NOT NULL"
    assert await db.fetchval(still_dead) == 1
    revoked = await db.fetchrow("SELECT revoked_by, reason FROM payment_service.revoked_tokens")
    assert tuple(revoked) == ("olga", "console_logout")


async def test_a_read_only_session_can_sign_out(
    client: TestClient[Any, Any], db: asyncpg.Pool, page: Any
) -> None:
    page.set_default_timeout(QUICK_MS)
    await sign_in(page, client, [READ])
    async with page.expect_navigation():
        await page.click("text=Sign out")
    assert page.url.endswith("/console/login"), page.url
    assert await page.inner_text("h1") == "Sign in"


async def test_a_revoked_ops_token_ends_the_sessions_made_from_it(
    client: TestClient[Any, Any], db: asyncpg.Pool, page: Any
) -> None:
    page.set_default_timeout(QUICK_MS)
    ops_token = token_for(client, [READ])
    await page.goto(base(client) + "/console/login")
    await page.fill("textarea[name=token]", ops_token)
    await page.click("button[type=submit]")
    assert page.url.endswith("/console")
    admin = token_for(client, [WRITE], "admin")
    jti = tokens.verify(ops_token, client.server.app[appkeys.SETTINGS].admin_jwt_secret).token_id
    answer = await client.post("/api/v1/tokens/revoke", json={"jti": jti},
                               headers={"Authorization": f"Bearer {admin}"})  # fmt: skip
    assert answer.status == 200
    await page.goto(base(client) + "/console/payments")
    assert page.url.endswith("/console/login")
    await page.fill("textarea[name=token]", ops_token)  # nor can it sign in again
    await page.click("button[type=submit]")
    assert "invalid or expired token" in await page.inner_text(".error")


def _cookies(resp: ClientResponse) -> dict[str, Morsel[str]]:
    return {name: morsel for name, morsel in resp.cookies.items()}


async def _sign_in_over(client: TestClient[Any, Any], headers: dict[str, str]) -> ClientResponse:
    """Sign in as a browser behind `headers` would (the forms' cookies sent by hand: the
    test client's jar keeps Secure cookies off plain http)."""
    form_page = await client.get("/console/login", headers=headers)
    login_csrf = _cookies(form_page)["paygate_login_csrf"].value
    return await client.post(
        "/console/login", allow_redirects=False,
        data={"csrf_token": login_csrf, "token": token_for(client, [WRITE])},
        headers={**headers, "Cookie": f"paygate_login_csrf={login_csrf}",
                 "Origin": f"{headers.get('X-Forwarded-Proto', 'http')}://{client.host}:{client.port}"},
    )  # fmt: skip


async def test_behind_a_trusted_tls_proxy_the_session_is_https_s(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    proxied = {"X-Forwarded-Proto": "https"}
    behind = await make_client(trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),))
    signed = await _sign_in_over(behind, proxied)
    assert signed.status == 303  # the Origin https://host matched the scheme the proxy saw
    session = _cookies(signed)["paygate_session"]
    assert session["secure"] and session["httponly"] and session["samesite"] == "Strict"
    assert signed.headers["Strict-Transport-Security"].startswith("max-age=")
    page = await behind.get("/console", headers={**proxied,
                            "Cookie": f"paygate_session={session.value}"})  # fmt: skip
    assert page.status == 200 and "Strict-Transport-Security" in page.headers

    # Anyone may send the header: from a peer that is not a trusted proxy it is ignored.
    direct = await make_client()
    refused = await _sign_in_over(direct, proxied)
    assert refused.status == 403 and "csrf_failed" in await refused.text()
    plain = await _sign_in_over(direct, {})
    assert plain.status == 303 and not _cookies(plain)["paygate_session"]["secure"]
    assert "Strict-Transport-Security" not in plain.headers

    # A proxy that cannot be listed: FORCE_HTTPS.
    forced = await make_client(force_https=True)
    signed = await _sign_in_over(forced, proxied)
    assert signed.status == 303 and _cookies(signed)["paygate_session"]["secure"]


async def test_a_link_cannot_put_words_in_the_console(
    client: TestClient[Any, Any], db: asyncpg.Pool, page: Any
) -> None:
    page.set_default_timeout(QUICK_MS)
    await sign_in(page, client, [READ])
    lure = "Your session expired: sign in again at https://evil.example/console"
    await page.goto(base(client) + "/console?notice=" + lure.replace(" ", "+"))
    assert await page.locator("p.notice").count() == 0
    assert "evil.example" not in await page.content()


async def test_a_filter_value_cannot_add_parameters_to_a_link(
    client: TestClient[Any, Any], db: asyncpg.Pool, page: Any
) -> None:
    page.set_default_timeout(QUICK_MS)
    await sign_in(page, client, [READ])
    await page.goto(base(client) + "/console/exceptions?assignee=nobody%26state%3Dall")
    export = await page.get_attribute("#export", "href") or ""
    query = parse_qs(urlsplit(export).query)
    assert query == {"assignee": ["nobody&state=all"]}, export
    assert re.search(r"[?&]state=", export) is None
