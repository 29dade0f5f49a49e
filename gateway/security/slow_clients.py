"""Limits against slow and oversized clients.

aiohttp reads request headers inside its protocol, so their size and count limits are
server arguments (`server_kwargs`, given to `web.AppRunner`). The body is read by the
handler: `gateway.http.body.read_body` bounds it by CLIENT_TIMEOUT_SECONDS (408 when the
client trickles).
aiohttp has no header-read deadline of its own; a client sending headers slowly holds
one connection until `keepalive_timeout`-independent TCP limits apply, so deployments
facing the internet directly should still sit behind a proxy with a header timeout.
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
