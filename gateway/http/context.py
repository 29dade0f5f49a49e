"""The request context every route runs in: request id in and out, the request gates
(appkeys.REQUEST_GATES), and every error rendered as `{"error": code, "detail": ...}`.
Input problems are 4xx; only our own bugs are 500.

It wraps each route's handler (`add_route` below, called by gateway.http.routes)
instead of being an aiohttp middleware. With any middleware at all aiohttp runs every
request through two more coroutine frames (the middleware and its own current-app
fix-up); on the bench machine that, with our per-request metrics, was a quarter of the
server's CPU for a duplicate webhook. Unknown paths and methods reach `no_such_route`,
registered last, so their 404/405 are rendered here too. Checks are added as gates
rather than wrappers. A database that cannot take the work (down, failing over, read-only:
`gateway.db.primary.unavailable`) is a 503 with `Retry-After`, not a 500, wherever in a
handler it surfaces.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import re
import weakref

import asyncpg
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway import appkeys
from gateway.db import primary
from gateway.db.errors import describe_text
from gateway.errors import PaygateError, ServiceUnavailable
from gateway.observability.logs import request_id_var

log = logging.getLogger("paygate.http")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# Generated ids: a random per-process prefix and a counter, unique without the cost of
# a uuid4 per request.
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):016x}"  # 32 hex digits, like a uuid4 hex


def _reseed_after_fork() -> None:
    global _ID_PREFIX
    _ID_PREFIX = os.urandom(8).hex()


os.register_at_fork(after_in_child=_reseed_after_fork)

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    431: "headers_too_large",
}


def json_response(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )


def error_response(exc: PaygateError) -> web.Response:
    return json_response(exc.body(), exc.status, exc.headers())


_in_context: weakref.WeakSet[Handler] = weakref.WeakSet()


def with_request_context(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def in_request_context(request: web.Request) -> web.StreamResponse:
        incoming = request.headers.get("X-Request-ID", "")
        rid = incoming if incoming and _SAFE_ID.match(incoming) else new_request_id()
        token = request_id_var.set(rid)
        try:
            try:
                for gate in request.app.get(appkeys.REQUEST_GATES, ()):
                    pending = gate(request)  # an awaitable when it must ask the database
                    if pending is not None:
                        await pending
                response = await handler(request)
            except PaygateError as exc:
                response = _render_error(request, exc)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                response = _http_error_response(exc)
            except Exception as exc:
                if primary.unavailable(exc):
                    log.warning(
                        "unavailable on %s %s: %s",
                        request.method, request.path, describe_text(exc),
                    )  # fmt: skip
                    response = _render_error(request, _unavailable(exc))
                else:
                    log.exception("unhandled error on %s %s", request.method, request.path)
                    response = json_response(
                        {"error": "internal_error", "detail": "unexpected error",
                         "request_id": rid},
                        500,
                    )  # fmt: skip
            response.headers["X-Request-ID"] = rid
            return response
        finally:
            request_id_var.reset(token)

    _in_context.add(in_request_context)
    return in_request_context


def _render_error(request: web.Request, exc: PaygateError) -> web.Response:
    """JSON everywhere, but a page for the console's browser (imported only then)."""
    if request.path == "/console" or request.path.startswith("/console/"):
        from gateway.http.console.render import error_page

        response = error_page(request, exc)
        response.headers.update(exc.headers())
        return response
    return error_response(exc)


def _unavailable(exc: Exception) -> ServiceUnavailable:
    if isinstance(
        exc, asyncpg.PostgresError | asyncpg.InterfaceError | asyncpg.InternalClientError
    ):
        return ServiceUnavailable("database unavailable", code="database_unavailable")
    return ServiceUnavailable("a dependency is unavailable", code="unavailable")


def _http_error_response(exc: web.HTTPException) -> web.Response:
    code = _HTTP_CODES.get(exc.status, "http_error")
    allow = exc.headers.get("Allow")
    headers = {"Allow": allow} if allow is not None else None
    return json_response({"error": code, "detail": exc.reason}, exc.status, headers)


def in_context(handler: Handler) -> bool:
    """Whether a route's handler runs in the request context."""
    return handler in _in_context


def add_route(app: web.Application, method: str, path: str, handler: Handler) -> None:
    """Register a route whose handler runs in the request context (GET also answers HEAD)."""
    if method == "GET":
        app.router.add_get(path, with_request_context(handler))
    else:
        app.router.add_route(method, path, with_request_context(handler))


async def no_such_route(request: web.Request) -> web.StreamResponse:
    """Last in the route table: 405 (with Allow) if another route has this path, else 404."""
    own = request.match_info.route.resource
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not own:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


async def require_request_context(app: web.Application) -> None:
    """On startup: refuse to serve a route registered without the request context, since
    it would skip the request gates (the ops API's token check) along with the rest."""
    outside = sorted(
        {route.resource.canonical for route in app.router.routes()
         if route.resource is not None and not in_context(route.handler)}
    )  # fmt: skip
    if outside:
        raise RuntimeError(f"routes outside the request context: {', '.join(outside)}")


def add_fallback_route(app: web.Application) -> None:
    """After every other route: the router tries this catch-all last (it is indexed
    under "/", the shortest prefix)."""
    app.router.add_route("*", "/{path:.*}", with_request_context(no_such_route))
