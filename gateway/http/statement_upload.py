"""Receiving a statement upload: the whole body is spooled to a temporary file first, and
only then does the import take a database connection.

A statement may be large and its client slow, so reading it while holding a pool
connection let a few slow uploads hold the pool (issue 28: 22 of them wedged a process
until restart). Here a client costs a file descriptor and disk space, bounded three ways
(all configurable): the statement's size (413 `statement_too_large`), a line's length
(413 `statement_line_too_long`: one 48 MB line also made the CSV parser quadratic) and the
time the whole upload may take (408 `request_timeout`). A client that goes away mid-upload
is a client problem (`client_disconnected`): nothing touched the database yet.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.config import Settings
from gateway.domain.statements import StatementFile
from gateway.errors import PaygateError, PayloadTooLarge
from gateway.http.body import RequestTimeout

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
# What reading a body raises when its client went away (reset, or EOF before the end).
_CLIENT_GONE = (ConnectionError, aiohttp.ClientPayloadError, HttpProcessingError)


class ClientDisconnected(PaygateError):
    """The client closed the connection before its upload was complete (nobody reads the
    answer; the code is for the log)."""

    status = 400
    code = "client_disconnected"


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int
    max_line_bytes: int
    deadline_seconds: float

    @classmethod
    def of(cls, settings: Settings) -> UploadLimits:
        return cls(
            settings.reconcile_max_statement_bytes,
            settings.reconcile_max_line_bytes,
            settings.reconcile_upload_timeout_seconds,
        )


def check_declared_size(request: web.Request, limits: UploadLimits) -> None:
    """Refuse at once a body whose Content-Length says it is too large."""
    if request.content_length is not None and request.content_length > limits.max_bytes:
        raise _too_large(limits)


async def spool(
    chunks: AsyncIterator[bytes], limits: UploadLimits, name: str | None = None
) -> StatementFile:
    """Every chunk into an anonymous temporary file (gone when closed), with its sha256."""
    f = tempfile.TemporaryFile(prefix="paygate-statement-")  # noqa: SIM115 - returned open
    try:
        sha, size, line = hashlib.sha256(), 0, 0
        async with asyncio.timeout(limits.deadline_seconds):
            async for chunk in chunks:
                size += len(chunk)
                if size > limits.max_bytes:
                    raise _too_large(limits)
                line = _line_length(chunk, line, limits.max_line_bytes)
                sha.update(chunk)
                f.write(chunk)
        f.flush()
        return StatementFile(f, sha.hexdigest(), size, name)
    except TimeoutError:
        f.close()
        raise RequestTimeout(
            f"the statement was not received within {limits.deadline_seconds:g} s"
            " (RECONCILE_UPLOAD_TIMEOUT_SECONDS)"
        ) from None
    except (
        ConnectionError,
        aiohttp.ClientPayloadError,
        aiohttp.http_exceptions.HttpProcessingError,
    ):
        f.close()
        log.info("statement upload abandoned by its client after %d bytes", size)
        raise ClientDisconnected("the client closed the connection during the upload") from None
    except BaseException:
        f.close()
        raise


def _line_length(chunk: bytes, current: int, limit: int) -> int:
    """The length of the line still open after `chunk`; 413 when a line passes `limit`."""
    start = 0
    while True:
        cut = chunk.find(b"\n", start)
        if cut < 0:
            current += len(chunk) - start
            if current > limit:
                raise _line_too_long(limit)
            return current
        if current + cut - start > limit:
            raise _line_too_long(limit)
        current, start = 0, cut + 1


def _too_large(limits: UploadLimits) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"a statement may have at most {limits.max_bytes} bytes (RECONCILE_MAX_STATEMENT_BYTES)",
        code="statement_too_large",
    )


def _line_too_long(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"a statement line may have at most {limit} bytes (RECONCILE_MAX_LINE_BYTES)",
        code="statement_line_too_long",
    )


async def request_chunks(request: web.Request) -> AsyncIterator[bytes]:
    async for chunk in request.content.iter_chunked(READ_CHUNK):
        yield chunk


async def part_chunks(part: aiohttp.BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(READ_CHUNK):
        yield chunk
