"""The request context every route runs in: request id in and out, the gate of the
route's declared access (appkeys.ACCESS_GATES, gateway.security.access), the body read
deadline (gateway.http.body), `Cache-Control: no-store` on every answer of an ops or
console route, and every error rendered as `{"error": code, "detail": ...}`. Input
problems are 4xx; only our own bugs are 500.

It wraps each route's handler (`add_route` below, called by gateway.http.routes)
instead of being an aiohttp middleware. With any middleware at all aiohttp runs every
request through two more coroutine frames (the middleware and its own current-app
fix-up); on the bench machine that, with our per-request metrics, was a quarter of the
server's CPU for a duplicate webhook. Unknown paths and methods reach `no_such_route`,
registered last, so their 404/405 are rendered here too. Checks are added as gates
rather than wrappers; the gate comes from the route that matched, so no spelling of a
path (`%2F`, dot segments) can reach a handler past another route's gate. A database
that cannot take the work (down, failing over, read-only: `gateway.db.primary.unavailable`)
is a 503 with `Retry-After`, not a 500, wherever in a handler it surfaces. A body that
cannot be parsed (bad chunking) is a 400 naming only the kind of error.
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
from aiohttp.web_protocol import RequestPayloadError

from gateway import appkeys
from gateway.config import Settings
from gateway.db import primary
from gateway.db.errors import describe_text
from gateway.errors import BadRequest, PaygateError, ServiceUnavailable
from gateway.http.body import RequestTimeout, body_deadline
from gateway.observability.logs import request_id_var
from gateway.security.access import Access, missing_gates

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
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal_error",
    504: "timeout",
}


def error_code(status: int) -> str:
    """The machine-readable code of an HTTP error status we did not raise ourselves."""
    return _HTTP_CODES.get(status, "http_error")


def json_response(
    body: object, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )


def error_response(exc: PaygateError) -> web.Response:
    return json_response(exc.body(), exc.status, exc.headers())


_access_of: weakref.WeakKeyDictionary[Handler, Access] = weakref.WeakKeyDictionary()
NO_STORE = "no-store"


def with_request_context(handler: Handler, access: Access, *, upload: bool = False) -> Handler:
    """`upload`: a statement upload, whose body may take RECONCILE_UPLOAD_TIMEOUT_SECONDS
    (it is spooled to a file, holding no connection) instead of CLIENT_TIMEOUT_SECONDS."""
    private = access.private  # looked up once, not per request

    @functools.wraps(handler)
    async def in_request_context(request: web.Request) -> web.StreamResponse:
        incoming = request.headers.get("X-Request-ID", "")
        rid = incoming if incoming and _SAFE_ID.match(incoming) else new_request_id()
        token = request_id_var.set(rid)
        app = request.app
        deadline = (
            None
            if request.content.is_eof()  # the body came with the headers (or there is none)
            else body_deadline(request, _body_seconds(app[appkeys.SETTINGS], upload))
        )
        try:
            try:
                gate = app[appkeys.ACCESS_GATES][access]
                if gate is not None:
                    pending = gate(request)  # an awaitable when it must ask the database
                    if pending is not None:
                        await pending
                response = await handler(request)
            except PaygateError as exc:
                response = _render_error(request, exc)
                if isinstance(exc, RequestTimeout):
                    response.force_close()  # the rest of the body is not worth waiting for
            except web.HTTPException as exc:
                if exc.status < 400:
                    if private:
                        exc.headers.setdefault("Cache-Control", NO_STORE)
                    raise
                response = _http_error_response(exc)
            except RequestPayloadError as exc:  # a malformed body (chunking, encoding)
                response = _render_error(request, BadRequest(_payload_detail(exc)))
                response.force_close()
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
            if private:
                response.headers.setdefault("Cache-Control", NO_STORE)
            return response
        finally:
            if deadline is not None:
                deadline.cancel()
            request_id_var.reset(token)

    _access_of[in_request_context] = access
    return in_request_context


def _payload_detail(exc: RequestPayloadError) -> str:
    """The kind of body error, never the bytes that caused it."""
    cause = exc.__cause__ or (exc.args[0] if exc.args else None)
    kind = type(cause).__name__ if isinstance(cause, BaseException) else "malformed"
    return f"the request body could not be read ({kind})"


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
    code = error_code(exc.status)
    allow = exc.headers.get("Allow")
    headers = {"Allow": allow} if allow is not None else None
    return json_response({"error": code, "detail": exc.reason}, exc.status, headers)


def in_context(handler: Handler) -> bool:
    """Whether a route's handler runs in the request context."""
    return handler in _access_of


def access_of(handler: Handler) -> Access | None:
    """The access a registered route declared (None: not in the request context)."""
    return _access_of.get(handler)


def _body_seconds(settings: Settings, upload: bool) -> float:
    if upload:
        return settings.reconcile_upload_timeout_seconds
    return settings.client_timeout_seconds


def add_route(
    app: web.Application,
    method: str,
    path: str,
    handler: Handler,
    access: Access,
    *,
    upload: bool = False,
) -> None:
    """Register a route whose handler runs in the request context behind the gate of
    `access` (GET also answers HEAD)."""
    if not isinstance(access, Access):
        raise TypeError(f"{method} {path}: a route must declare its access, got {access!r}")
    if method == "GET":
        app.router.add_get(path, with_request_context(handler, access, upload=upload))
    else:
        app.router.add_route(method, path, with_request_context(handler, access, upload=upload))


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


def check_routes(app: web.Application) -> None:
    """Refuse an app with a route outside the request context (it would skip its gate,
    along with the rest) or an access that has no gate registered."""
    outside = sorted(
        {route.resource.canonical for route in app.router.routes()
         if route.resource is not None and not in_context(route.handler)}
    )  # fmt: skip
    if outside:
        raise RuntimeError(f"routes outside the request context: {', '.join(outside)}")
    gates = app.get(appkeys.ACCESS_GATES)
    missing = missing_gates(gates or {})
    if missing:
        raise RuntimeError(f"no gate for the access {', '.join(a.value for a in missing)}")


async def require_routes_checked(app: web.Application) -> None:
    """On startup: the same check, for routes added after the factory built the app."""
    check_routes(app)


def add_fallback_route(app: web.Application) -> None:
    """After every other route: the router tries this catch-all last (it is indexed
    under "/", the shortest prefix)."""
    app.router.add_route("*", "/{path:.*}", with_request_context(no_such_route, Access.PUBLIC))
