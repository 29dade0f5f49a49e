"""A global bound on concurrent webhook requests in this process.

Past MAX_IN_FLIGHT_REQUESTS the request is refused at once with 503 and `Retry-After`
(fails closed: shedding load early keeps latency bounded for the requests admitted,
and providers retry). The webhook handler enters and leaves the bound itself, so
health, metrics and the ops API are never counted: an operator can still look at an
overloaded process.
"""

from __future__ import annotations

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
