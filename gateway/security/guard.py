"""The source controls the webhook handler runs before it reads the body.

Order: allowlist (403, fails closed for an unknown client), then the channel's token
bucket (429 with `Retry-After`). Only a request that passes both costs a body read.
`check` decides at once, except when the shared limiter must lease tokens first: then it
returns an awaitable (bounded by the lease timeout) that raises the same refusals.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Sequence

from aiohttp import web

from gateway.errors import Forbidden, TooManyRequests
from gateway.ingest.channels import Channel
from gateway.observability import metrics
from gateway.security.allowlist import allowed
from gateway.security.client_ip import IPNetwork, client_ip
from gateway.security.ratelimit import RateLimiter, retry_after_seconds
from gateway.security.shared_ratelimit import SharedRateLimiter


class ChannelSourceGuard:
    def __init__(
        self,
        trusted_proxies: Sequence[IPNetwork | str],
        limiter: RateLimiter | SharedRateLimiter | None = None,
    ) -> None:
        self.trusted = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_proxies)
        self.limiter = limiter or RateLimiter()

    def check(self, request: web.Request, channel: Channel) -> Awaitable[None] | None:
        if channel.allow_cidrs:
            addr = client_ip(
                request.remote,
                self.trusted,
                x_forwarded_for=request.headers.getall("X-Forwarded-For", ()),
                forwarded=request.headers.getall("Forwarded", ()),
            )
            if not allowed(addr, channel.allow_cidrs):
                metrics.rate_limited.labels(channel.name, "allowlist").inc()
                raise Forbidden(
                    "this source may not post to this channel", code="source_not_allowed"
                )
        if channel.rate_per_second is None:
            return None
        wait = self.limiter.take(channel.name, channel.rate_per_second, channel.burst)
        if isinstance(wait, float):
            _refuse_if_waiting(channel, wait)
            return None
        return _decide_later(channel, wait)


async def _decide_later(channel: Channel, wait: Awaitable[float]) -> None:
    _refuse_if_waiting(channel, await wait)


def _refuse_if_waiting(channel: Channel, wait: float) -> None:
    if wait > 0:
        metrics.rate_limited.labels(channel.name, "rate").inc()
        raise TooManyRequests(
            "rate limit exceeded for this channel", retry_after=retry_after_seconds(wait)
        )
