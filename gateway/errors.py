"""The exception tree every layer raises and the request context (gateway.http.context) renders.

Each error carries its HTTP status, a machine-readable code and whether retrying
can help, so handlers never build error responses by hand.
"""

from __future__ import annotations

from typing import Any


class PaygateError(Exception):
    status: int = 500
    code: str = "internal_error"
    retriable: bool = False

    def __init__(self, detail: str = "", *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail or self.code)
        self.detail = detail
        if code is not None:
            self.code = code
        self.extra = extra

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.code, "detail": self.detail}
        out.update(self.extra)
        return out

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(PaygateError):
    status = 400
    code = "bad_request"


class Unauthorized(PaygateError):
    status = 401
    code = "unauthorized"


class Forbidden(PaygateError):
    status = 403
    code = "forbidden"


class NotFound(PaygateError):
    status = 404
    code = "not_found"


class PayloadTooLarge(PaygateError):
    status = 413
    code = "payload_too_large"


class Conflict(PaygateError):
    status = 409
    code = "conflict"


class ValidationError(PaygateError):
    """A field failed validation: the response names it."""

    status = 422
    code = "validation_error"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail, field=field)
        self.field = field


class _RetryLater(PaygateError):
    """A refusal the caller should retry: `Retry-After` says when (whole seconds, >= 1)."""

    retriable = True

    def __init__(self, detail: str = "", *, retry_after: int = 1, code: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.retry_after = max(1, retry_after)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class TooManyRequests(_RetryLater):
    status = 429
    code = "rate_limited"


class ServiceUnavailable(_RetryLater):
    """Infrastructure cannot take the write now; the caller should retry later."""

    status = 503
    code = "unavailable"


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""
