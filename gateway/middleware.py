"""The one middleware: request id in and out, and every error rendered as
`{"error": code, "detail": ...}`. Input problems are 4xx; only our own bugs are 500."""

from __future__ import annotations

import logging
import re
import uuid

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.errors import PaygateError
from gateway.logs import request_id_var

log = logging.getLogger("paygate.http")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

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


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-ID", "")
    rid = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
    token = request_id_var.set(rid)
    try:
        try:
            response = await handler(request)
        except PaygateError as exc:
            response = error_response(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = _HTTP_CODES.get(exc.status, "http_error")
            response = json_response({"error": code, "detail": exc.reason}, exc.status)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            response = json_response(
                {"error": "internal_error", "detail": "unexpected error", "request_id": rid}, 500
            )
        response.headers["X-Request-ID"] = rid
        return response
    finally:
        request_id_var.reset(token)
