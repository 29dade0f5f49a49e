"""Reading a webhook's raw body, bounded in size (aiohttp's client_max_size: 413) and in
time (CLIENT_TIMEOUT_SECONDS: 408 when a client trickles it)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.errors import PaygateError, PayloadTooLarge


class RequestTimeout(PaygateError):
    status = 408
    code = "request_timeout"


async def read_body(request: web.Request, timeout: float) -> bytes:
    """The raw body, or 408 if it takes longer than `timeout`, or 413 naming the limit
    (MAX_BODY_BYTES, aiohttp's client_max_size) as a PaygateError, so the webhook counts
    and logs it as `payload_too_large` rather than as an unexpected error."""
    try:
        if request.content.is_eof():  # the whole body arrived with the headers: no timer
            return await request.read()
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout("the request body was not received in time") from None
    except web.HTTPRequestEntityTooLarge:
        limit = request.client_max_size
        raise PayloadTooLarge(f"the body exceeds the maximum of {limit} bytes") from None
