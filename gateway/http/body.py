"""Request bodies: one read deadline for every route, and the webhook's raw read.

The request context arms `body_deadline` for every request whose body had not fully
arrived with its headers (so a webhook that came in one packet costs one check, no
timer). When CLIENT_TIMEOUT_SECONDS pass before the last byte, the body stream fails
with `RequestTimeout`: whatever reads it (`read()`, `post()`, multipart, a streaming
reader) gets a 408 `request_timeout` and the connection is closed. Being a
`TimeoutError` too, aiohttp's own drain of an unread body after the answer stops on
it quietly instead of logging an error. Size is aiohttp's `client_max_size` (413).
"""

from __future__ import annotations

import asyncio

from aiohttp import StreamReader, web

from gateway.errors import PaygateError


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
    """The raw body (413 above the size limit, 408 past the deadline)."""
    return await request.read()
