"""Reading a webhook's raw body, bounded in size (aiohttp's client_max_size: 413) and in
time (CLIENT_TIMEOUT_SECONDS: 408 when a client trickles it)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.errors import PaygateError


class RequestTimeout(PaygateError):
    status = 408
    code = "request_timeout"


async def read_body(request: web.Request, timeout: float) -> bytes:
    """The raw body (size limit -> 413 from aiohttp), or 408 if it takes longer than `timeout`."""
    if request.content.is_eof():  # the whole body arrived with the headers: no timer needed
        return await request.read()
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout("the request body was not received in time") from None
