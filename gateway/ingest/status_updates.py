"""Status-only deliveries and re-sent payments with a new status: parsed here and applied
through the state machine in the database (gateway.db.status), with the caches told.

`StatusService` is the webhook handler's StatusApplier. `parked_hook` is what the writer
runs after a batch that created payments with status updates already waiting for them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.config import Settings
from gateway.db.payments import Candidate
from gateway.db.status import (
    DEFERRED,
    StatusEvent,
    StatusResult,
    any_parked,
    apply_parked,
    apply_status,
)
from gateway.domain.lifecycle import Outcome
from gateway.domain.model import REFERENCE_MAX, STATUSES, Payment
from gateway.domain.references import forbidden, normalize_reference
from gateway.domain.validation import parse_event_time
from gateway.errors import ValidationError
from gateway.ingest.dedup import Deduplicator, Known
from gateway.ingest.writer import AfterCommit
from gateway.notify import Wakeup

log = logging.getLogger(__name__)

_PAYMENT_FIELDS = ("amount", "loan_account_number", "cif")


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """A validated status-only delivery."""

    reference_number: str
    status: str
    event_at: datetime | None  # naive UTC


def parse_status_update(fields: Any) -> StatusUpdate:
    """Validate a status-only body: reference_number, status and an optional event_time."""
    ref = fields.get("reference_number")
    if not isinstance(ref, str) or not ref.strip():
        raise ValidationError("reference_number", "is required")
    if len(ref) > REFERENCE_MAX or forbidden(ref):
        raise ValidationError("reference_number", "too long or contains control characters")
    ref = normalize_reference(ref)
    status = fields.get("status")
    if status not in STATUSES:
        raise ValidationError("status", "must be one of " + ", ".join(STATUSES))
    return StatusUpdate(ref, status, parse_event_time(fields.get("event_time")))


def is_status_only(fields: Any) -> bool:
    """A body naming a reference and a status but none of the payment's business fields."""
    return (
        isinstance(fields, dict)
        and "reference_number" in fields
        and fields.get("status") is not None
        and not any(fields.get(k) is not None for k in _PAYMENT_FIELDS)
    )


def _body(result: StatusResult) -> dict[str, Any]:
    out: dict[str, Any] = {"status": result.outcome, "payment_id": result.payment_id}
    if result.outcome == DEFERRED:
        out["reference_number"] = result.reference_number
    return out


class StatusService:
    """The pool is asked for lazily (`pool()`): it exists only once the app has started."""

    def __init__(
        self,
        settings: Settings,
        pool: Callable[[], asyncpg.Pool],
        dedup: Callable[[], Deduplicator | None],
        outbox_wake: Wakeup,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.dedup = dedup
        self.outbox_wake = outbox_wake

    def is_status_only(self, fields: Any) -> bool:
        return is_status_only(fields)

    async def apply_update(
        self, fields: Any, *, channel: str, delivery_id: str | None, body: bytes
    ) -> tuple[dict[str, Any], str]:
        update = parse_status_update(fields)
        result = await self._apply(update.reference_number, update.status, update.event_at,
                                   channel=channel, delivery_id=delivery_id, body=body)  # fmt: skip
        return _body(result), result.outcome

    async def apply_payment(
        self, payment: Payment, *, channel: str, delivery_id: str | None, body: bytes
    ) -> tuple[dict[str, Any], str]:
        # The writer already kept this delivery's raw body (as a duplicate): not twice.
        result = await self._apply(payment.reference_number, payment.status,
                                   payment.provider_event_at, channel=channel,
                                   delivery_id=delivery_id, body=None)  # fmt: skip
        return _body(result), result.outcome

    async def _apply(
        self,
        reference: str,
        status: str,
        event_at: datetime | None,
        *,
        channel: str,
        delivery_id: str | None,
        body: bytes | None,
    ) -> StatusResult:
        topic = self.settings.kafka_topic
        event = StatusEvent(
            reference, status, event_at, cause="webhook", actor=f"webhook:{channel}",
            channel=channel, delivery_id=delivery_id, body=body,
        )  # fmt: skip
        async with self.pool().acquire(timeout=2) as conn:
            result = await apply_status(conn, event, topic=topic)
            if result.outcome == DEFERRED:
                # The payment may have been committed while we parked: its hook could have
                # missed our row, so look again now that the row is committed.
                late = await apply_parked(conn, [reference], topic=topic, actor="webhook")
                if late:
                    result = late[-1]
        if result.outcome == Outcome.UPDATED:
            self.outbox_wake.ring()
            await self._refresh_caches(result)
        return result

    async def _refresh_caches(self, result: StatusResult) -> None:
        dedup = self.dedup()
        if dedup is None or result.payment_id is None or result.payload_hash is None:
            return
        known = Known(result.payment_id, result.payload_hash, str(result.new_status))
        dedup.remember([(result.reference_number, known)])
        try:
            await dedup.publish([(result.reference_number, known)])
        except Exception:  # the caches are hints; the database already has the truth
            log.warning("could not refresh the reference cache after a status change")

    def parked_hook(self) -> AfterCommit:
        """The writer's after-commit hook: apply updates parked for the payments it created."""

        async def apply_parked_hook(conn: asyncpg.Connection, created: Sequence[Candidate]) -> None:
            refs = sorted({c.payment.reference_number for c in created})
            # One cheap read on the hot path; a row parked after it is caught by the parking
            # request's own re-check (it sees this batch's committed payments).
            if not await any_parked(conn, refs):
                return
            results = await apply_parked(
                conn, refs, topic=self.settings.kafka_topic, actor="webhook"
            )
            if any(r.outcome == Outcome.UPDATED for r in results):
                self.outbox_wake.ring()
                dedup = self.dedup()
                if dedup is not None:
                    for r in results:
                        dedup.forget(r.reference_number)

        return apply_parked_hook
