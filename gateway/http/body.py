"""Request bodies: one read deadline for every route, and the webhook's raw read.

The request context arms `body_deadline` for every request whose body had not fully
arrived with its headers (so a webhook that came in one packet costs one check, no
timer). When CLIENT_TIMEOUT_SECONDS pass before the last byte, the body stream fails
with `RequestTimeout`: whatever reads it (`read()`, `post()`, multipart, a streaming
reader) gets a 408 `request_timeout` and the connection is closed. Being a
`TimeoutError` too, aiohttp's own drain of an unread body after the answer stops on
it quietly instead of logging an error. Size is aiohttp's `client_max_size` (413
`payload_too_large`).
"""

from __future__ import annotations

import asyncio

from aiohttp import StreamReader, web

from gateway.errors import PaygateError, PayloadTooLarge


class RequestTimeout(PaygateError, TimeoutError):
    status = 408
    code = "request_timeout"


def body_deadline(request: web.Request, seconds: float) -> asyncio.TimerHandle:
    """Fail the body stream of `request` if it is not complete within `seconds`; the
    caller cancels the returned timer once the handler is done."""
    return asyncio.get_running_loop().call_later(seconds, _expire, request.content)


def _expire(stream: StreamReader) -> None:
    if not stream.is_eof():
        stream.set_exception(RequestTimeout("the request body was not received in time"))


async def read_body(request: web.Request) -> bytes:
    """The raw body (408 past the deadline; 413 naming the limit, MAX_BODY_BYTES, as a
    PaygateError, so the webhook counts and logs it as `payload_too_large` rather than as
    an unexpected error)."""
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.client_max_size
        raise PayloadTooLarge(f"the body exceeds the maximum of {limit} bytes") from None
