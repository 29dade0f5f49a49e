"""Signing in and out of the console."""

from __future__ import annotations

import secrets
import time

from aiohttp import web

from gateway import appkeys
from gateway.errors import PaygateError
from gateway.http.console import session as sessions
from gateway.http.console.forms import action_form
from gateway.http.console.render import render
from gateway.security.tokens import check_not_revoked, policy_of


async def login_page(request: web.Request) -> web.Response:
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", login_csrf=token, error=None)
    sessions.set_cookie(response, request, sessions.LOGIN_COOKIE, token, 3600)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    submitted = form.get(sessions.CSRF_FIELD)
    sessions.check_login_csrf(request, submitted if isinstance(submitted, str) else None)
    token = form.get("token")
    settings = request.app[appkeys.SETTINGS]
    try:
        if not isinstance(token, str) or not token.strip():
            raise PaygateError("paste an ops token", code="unauthorized")
        if not settings.admin_jwt_secret:
            raise PaygateError("the console is disabled: ADMIN_JWT_SECRET is not set",
                               code="ops_api_disabled")  # fmt: skip
        cookie, session = sessions.new_session(
            settings.admin_jwt_secret, token.strip(), policy_of(settings)
        )
        await check_not_revoked(request.app[appkeys.REVOCATIONS], session.tid)
    except PaygateError as exc:
        fresh = secrets.token_urlsafe(24)
        status = exc.status if exc.status in (401, 403) else 401
        response = render(request, "login.html", status, login_csrf=fresh, error=exc.detail)
        sessions.set_cookie(response, request, sessions.LOGIN_COOKIE, fresh, 3600)
        return response
    response = web.HTTPSeeOther(sessions.PREFIX, headers=sessions.security_headers(request))
    sessions.set_cookie(response, request, sessions.COOKIE, cookie,
                        session.expires - int(time.time()))  # fmt: skip
    response.del_cookie(sessions.LOGIN_COOKIE, path=sessions.PREFIX)
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    """Any signed-in session may sign out; its id is revoked, so the cookie (and the CSRF
    token derived from it) stop working everywhere, not only in this browser."""
    await action_form(request)
    session = request[sessions.SESSION]
    await request.app[appkeys.REVOCATIONS].revoke(
        session.sid, session.expires, actor=session.principal.subject, reason="console_logout"
    )
    response = web.HTTPSeeOther(sessions.PREFIX + "/login",
                                headers=sessions.security_headers(request))  # fmt: skip
    response.del_cookie(sessions.COOKIE, path=sessions.PREFIX)
    raise response
