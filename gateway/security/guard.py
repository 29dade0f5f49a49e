"""The source controls the webhook handler runs around signature verification.

Before the body is read (`admit`): the allowlist (403, fails closed for an unknown
client), then the source's budget for failed verifications (429
`unverified_rate_limited`, gateway.security.unverified). After the signature passes
(`charge`): the channel's token bucket (429 `rate_limited` with `Retry-After`), so only
the provider's verified deliveries spend it. `charge` decides at once, except when the
shared limiter must lease tokens first: then it returns an awaitable (bounded by the
lease timeout) that raises the same refusal.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Sequence

from aiohttp import web

from gateway.errors import Forbidden, TooManyRequests
from gateway.ingest.channels import Channel
from gateway.observability import metrics
from gateway.security.allowlist import allowed
from gateway.security.client_ip import IPAddress, IPNetwork, client_ip
from gateway.security.ratelimit import RateLimiter, retry_after_seconds
from gateway.security.shared_ratelimit import SharedRateLimiter
from gateway.security.unverified import UnverifiedSources, source_key


class ChannelSourceGuard:
    def __init__(
        self,
        trusted_proxies: Sequence[IPNetwork | str],
        limiter: RateLimiter | SharedRateLimiter | None = None,
        unverified: UnverifiedSources | None = None,
    ) -> None:
        self.trusted = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_proxies)
        self.limiter = limiter or RateLimiter()
        self.unverified = unverified or UnverifiedSources(0.0, 1)

    def _client(self, request: web.Request) -> IPAddress | None:
        return client_ip(
            request.remote,
            self.trusted,
            x_forwarded_for=request.headers.getall("X-Forwarded-For", ()),
            forwarded=request.headers.getall("Forwarded", ()),
        )

    def admit(self, request: web.Request, channel: Channel) -> None:
        if channel.allow_cidrs and not allowed(self._client(request), channel.allow_cidrs):
            metrics.rate_limited.labels(channel.name, "allowlist").inc()
            raise Forbidden("this source may not post to this channel", code="source_not_allowed")
        if self.unverified.busy():
            wait = self.unverified.wait(source_key(self._client(request)))
            if wait > 0:
                metrics.unverified_refused.labels(channel.name).inc()
                raise TooManyRequests(
                    "too many deliveries from this source failed verification",
                    retry_after=retry_after_seconds(wait),
                    code="unverified_rate_limited",
                )

    def failed(self, request: web.Request, channel: Channel) -> None:
        if self.unverified.enabled:
            self.unverified.failed(source_key(self._client(request)))

    def charge(self, channel: Channel) -> Awaitable[None] | None:
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
