"""Rendering console pages: Jinja2 templates shipped in the package (autoescaped), the
headers every page carries, and the small formatting helpers the templates use."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import jinja2
from aiohttp import web

from gateway import appkeys
from gateway.errors import PaygateError
from gateway.http.console import notices
from gateway.http.console.session import CSRF_FIELD, SESSION, csrf_token, security_headers

HEADERS = {
    # Only our own files run: no inline script, no other origin, no framing.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def when(value: Any) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, str) and "T" in value:
        try:
            return when(datetime.fromisoformat(value))
        except ValueError:
            return value
    return "" if value is None else str(value)


def money(value: Any) -> str:
    if value is None:
        return ""
    return f"{Decimal(str(value)):,.2f}"


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gateway.http.console", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["money"] = money
    return env


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    session = request.get(SESSION)
    secret = request.app[appkeys.SETTINGS].admin_jwt_secret
    context.setdefault("user", session.principal.subject if session else None)
    context.setdefault("can_write", bool(session and session.principal.allows("ops:write")))
    context.setdefault("csrf", csrf_token(secret, session.sid) if session else "")
    context.setdefault("csrf_field", CSRF_FIELD)
    context.setdefault("path", request.path)
    context.setdefault("notice", notices.take(request, session.sid if session else None))
    html = environment().get_template(template).render(**context)
    response = web.Response(
        text=html, status=status, content_type="text/html", charset="utf-8",
        headers={**HEADERS, **security_headers(request)},
    )  # fmt: skip
    notices.clear(response, request)  # shown once
    return response


TITLES = {401: "Sign in first", 403: "Not allowed", 404: "Not found", 409: "Conflict",
          422: "Not accepted", 503: "Unavailable"}  # fmt: skip


def error_page(request: web.Request, exc: PaygateError) -> web.Response:
    """A refusal under /console, as a page instead of JSON, headed by what happened."""
    title = TITLES.get(exc.status, "Refused" if exc.status < 500 else "Something went wrong")
    return render(request, "error.html", exc.status, title=title, error=exc.code,
                  detail=exc.detail, extra=exc.headers())  # fmt: skip
