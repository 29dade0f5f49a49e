"""Limits against slow and oversized clients.

aiohttp reads request headers inside its protocol, so their size and count limits are
server arguments (`server_kwargs`, given to `web.AppRunner`). The body is read by the
handler: `read_body` bounds it by CLIENT_TIMEOUT_SECONDS (408 when the client trickles).
aiohttp has no header-read deadline of its own; a client sending headers slowly holds
one connection until `keepalive_timeout`-independent TCP limits apply, so deployments
facing the internet directly should still sit behind a proxy with a header timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway.config import Settings
from gateway.errors import PaygateError

MAX_LINE_SIZE = 8190  # request line and each header line, bytes
MAX_FIELD_SIZE = 8190  # one header value, bytes
MAX_HEADERS = 64  # provider webhooks send ~20
KEEPALIVE_TIMEOUT_SECONDS = 75.0  # idle keep-alive connections are closed after this


class RequestTimeout(PaygateError):
    status = 408
    code = "request_timeout"


def server_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `web.AppRunner(app, ..., **server_kwargs(settings))`."""
    return {
        "max_line_size": MAX_LINE_SIZE,
        "max_field_size": MAX_FIELD_SIZE,
        "max_headers": MAX_HEADERS,
        "keepalive_timeout": KEEPALIVE_TIMEOUT_SECONDS,
    }


async def read_body(request: web.Request, timeout: float) -> bytes:
    """The raw body (size limit -> 413 from aiohttp), or 408 if it takes longer than `timeout`."""
    if request.content.is_eof():  # the whole body arrived with the headers: no timer needed
        return await request.read()
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout("the request body was not received in time") from None
