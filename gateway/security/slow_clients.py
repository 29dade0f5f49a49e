"""Limits against slow and oversized clients.

aiohttp reads request headers inside its protocol, so their size and count limits are
server arguments (`server_kwargs`, given by `gateway.http.server.GatewayRunner`, which
also closes a new connection that has not sent a whole request head within
CLIENT_TIMEOUT_SECONDS, and bounds connections per source address). Every body is read
under one deadline, CLIENT_TIMEOUT_SECONDS from the handler's start, whatever route
reads it (`gateway.http.body`: 408 and the connection closed). Later requests on a
kept-alive connection: aiohttp closes one that stays incomplete past the keep-alive
timeout.
"""

from __future__ import annotations

from typing import Any

from gateway.config import Settings

MAX_LINE_SIZE = 8190  # request line and each header line, bytes
MAX_FIELD_SIZE = 8190  # one header value, bytes
MAX_HEADERS = 64  # provider webhooks send ~20
KEEPALIVE_TIMEOUT_SECONDS = 75.0  # idle keep-alive connections are closed after this


def server_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `web.AppRunner(app, ..., **server_kwargs(settings))`."""
    return {
        "max_line_size": MAX_LINE_SIZE,
        "max_field_size": MAX_FIELD_SIZE,
        "max_headers": MAX_HEADERS,
        "keepalive_timeout": KEEPALIVE_TIMEOUT_SECONDS,
    }
