"""A global bound on concurrent webhook requests in this process.

Past MAX_IN_FLIGHT_REQUESTS the request is refused at once with 503 and `Retry-After`
(fails closed: shedding load early keeps latency bounded for the requests admitted,
and providers retry). Health, metrics and the ops API are not counted, so an operator
can still look at an overloaded process.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway import metrics
from gateway.errors import ServiceUnavailable

WEBHOOK_PATH = "/api/v1/payments/webhook"


def is_webhook_path(path: str) -> bool:
    return path == WEBHOOK_PATH or path.startswith(WEBHOOK_PATH + "/")


class InFlight:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.current = 0

    def enter(self) -> bool:
        if self.current >= self.limit:
            return False
        self.current += 1
        return True

    def leave(self) -> None:
        self.current -= 1


def inflight_middleware(bound: InFlight) -> Middleware:
    @web.middleware
    async def limit_in_flight(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_webhook_path(request.path):
            return await handler(request)
        if not bound.enter():
            metrics.rate_limited.labels("all", "in_flight").inc()
            raise ServiceUnavailable(
                "too many requests in flight", code="overloaded", retry_after=1
            )
        try:
            return await handler(request)
        finally:
            bound.leave()

    return limit_in_flight
