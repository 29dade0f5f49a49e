"""The request-path parts the webhook handler and the ingest pipeline call through a
protocol: source controls (gateway.security), replay protection (gateway.security) and
the payment lifecycle (gateway.ingest.status_updates). They live here, not with the app
state that holds them, so the pipeline can name them without an import circle."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

if TYPE_CHECKING:
    from gateway.domain.model import Payment
    from gateway.ingest.channels import Channel


class SourceGuard(Protocol):
    def admit(self, request: web.Request, channel: Channel) -> None:
        """Before the body is read: raise Forbidden (allowlist) or TooManyRequests (a
        source whose deliveries keep failing verification)."""

    def failed(self, request: web.Request, channel: Channel) -> None:
        """This request's delivery failed verification (charges its source)."""

    def charge(self, channel: Channel) -> Awaitable[None] | None:
        """After verification: the channel's rate limit (TooManyRequests); an awaitable
        when the decision needs a lease from the shared limiter first."""


class ReplayGuard(Protocol):
    def seen(self, channel: str, delivery_id: str) -> str | None:
        """The payment id answered for this delivery before, if it was seen recently."""

    def remember(self, channel: str, delivery_id: str, payment_id: str) -> None:
        """Record an answered delivery (fire and forget)."""


class StatusApplier(Protocol):
    def is_status_only(self, fields: Any) -> bool:
        """True for a delivery that only reports a status change (no payment fields)."""

    async def apply_update(
        self,
        fields: Any,
        *,
        channel: str,
        delivery_id: str | None,
        body: bytes,
        id_is_key: bool = True,
    ) -> tuple[dict[str, Any], str]:
        """Apply (or park, if the payment is unknown) a status-only delivery; `id_is_key`:
        the delivery id is signed, so a retry under it parks nothing twice."""

    async def apply_payment(
        self, payment: Payment, *, channel: str, delivery_id: str | None, body: bytes
    ) -> tuple[dict[str, Any], str]:
        """A known payment re-sent with another status: run it through the state machine."""
