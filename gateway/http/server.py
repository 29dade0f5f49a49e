"""The HTTP server around the app: what happens before a request reaches a route.

`GatewayRunner` is the `web.AppRunner` that `paygate serve` (and the tests' server)
runs the app with. It adds the slow-client limits (gateway.security.slow_clients) and
swaps aiohttp's connection handling for ours in two places aiohttp leaves open:

- A request aiohttp cannot parse (bad request line, header, chunk size; a line past the
  size limit) never reaches a route: aiohttp answers it itself, with a `text/plain` page
  that quotes the offending bytes. `GatewayProtocol.handle_error` answers it as JSON
  instead, `{"error": code, "detail": <the status phrase>}`, quoting nothing.
- CLIENT_TIMEOUT_SECONDS also bounds a new connection's first request line and headers:
  a connection that has not sent them in time is closed (later requests on a kept-alive
  connection are bounded by the keep-alive timeout, which aiohttp applies to a request
  whose headers are incomplete). Bodies: gateway.http.body.
- MAX_CONNECTIONS_PER_SOURCE: connections open at once from one address (IPv6: one
  /64), per process. One more is answered 429 `too_many_connections` and closed before
  anything is read. Peers in TRUSTED_PROXIES are not counted (a proxy carries many
  clients on its connections; it should bound them itself).

What aiohttp does not let us shape: a TLS handshake that fails (no HTTP at all), and a
client that stops reading our answer (the kernel's buffers and keep-alive decide).
"""

from __future__ import annotations

import asyncio
import ipaddress
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from gateway import appkeys
from gateway.http.context import error_code, json_response
from gateway.observability import metrics
from gateway.security.client_ip import IPNetwork, is_trusted, parse_ip
from gateway.security.slow_clients import server_kwargs
from gateway.security.unverified import source_key

_REFUSAL = b'{"error":"too_many_connections","detail":"too many connections from this address"}'
TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
) % (len(_REFUSAL), _REFUSAL)


class GatewayProtocol(RequestHandler):
    """aiohttp's connection handler, answering what it cannot parse as JSON."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises if an answer began
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        response = json_response({"error": error_code(status), "detail": phrase}, status)
        response.force_close()
        return response


class GatewayServer(web.Server):
    """aiohttp's server (one per process), making our handlers and counting sources."""

    def __init__(
        self,
        *args: Any,
        per_source: int,
        trusted: tuple[IPNetwork, ...],
        header_seconds: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.header_seconds = header_seconds
        self.per_source = per_source
        self.trusted = trusted
        self._open: dict[str, int] = {}
        self._source_of: dict[RequestHandler, str] = {}

    def __call__(self) -> RequestHandler:
        return GatewayProtocol(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._loop.call_later(self.header_seconds, _first_request_due, handler)
        if not self.per_source:
            return
        key = self._source(transport)
        if key is None:
            return
        count = self._open.get(key, 0) + 1
        self._open[key] = count
        self._source_of[handler] = key
        if count > self.per_source:
            metrics.rate_limited.labels("all", "connections").inc()
            transport.write(TOO_MANY_CONNECTIONS)
            handler.force_close()  # closes once the answer is written; nothing is read

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        key = self._source_of.pop(handler, None)
        if key is not None:
            left = self._open[key] - 1
            if left:
                self._open[key] = left
            else:
                del self._open[key]

    def _source(self, transport: asyncio.Transport) -> str | None:
        peer = transport.get_extra_info("peername")
        if not isinstance(peer, tuple) or not peer:
            return None  # a Unix socket: no address to count
        addr = parse_ip(str(peer[0]))
        if addr is None or (self.trusted and is_trusted(addr, self.trusted)):
            return None
        return source_key(addr)


def _first_request_due(handler: RequestHandler) -> None:
    """Close a connection that has not sent one whole request head in time."""
    if handler.transport is not None and handler._request_count == 0:
        handler.force_close()


class GatewayRunner(web.AppRunner):
    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        self.settings = app[appkeys.SETTINGS]
        super().__init__(app, **{**server_kwargs(self.settings), **kwargs})

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # the app started and frozen, as aiohttp does it
        return GatewayServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            per_source=self.settings.max_connections_per_source,
            header_seconds=self.settings.client_timeout_seconds,
            trusted=tuple(
                ipaddress.ip_network(n, strict=False) for n in self.settings.trusted_proxies
            ),
            **plain._kwargs,  # what aiohttp gives each connection handler (limits, logging)
        )
