"""Status-only deliveries and re-sent payments with a new status: parsed here and applied
through the state machine in the database (gateway.db.status), with the caches told.

`StatusService` is the webhook handler's StatusApplier. `parked_hook` is what the writer
runs after a batch that created payments with status updates already waiting for them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from gateway.config import Settings
from gateway.db.payments import Candidate
from gateway.db.status import (
    DEFERRED,
    RETIRED,
    StatusEvent,
    StatusResult,
    apply_parked,
    apply_status,
)
from gateway.domain.event_time import check_event_time, latest_event_time
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


def parse_status_update(fields: Any, *, latest: datetime) -> StatusUpdate:
    """Validate a status-only body: reference_number, status and an optional event_time
    no later than `latest` (gateway.domain.event_time)."""
    ref = fields.get("reference_number")
    if not isinstance(ref, str) or not ref.strip():
        raise ValidationError("reference_number", "is required")
    if len(ref) > REFERENCE_MAX or forbidden(ref):
        raise ValidationError("reference_number", "too long or contains control characters")
    ref = normalize_reference(ref)
    status = fields.get("status")
    if status not in STATUSES:
        raise ValidationError("status", "must be one of " + ", ".join(STATUSES))
    event_at = check_event_time(parse_event_time(fields.get("event_time")), latest)
    return StatusUpdate(ref, status, event_at)


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
    if result.outcome in (DEFERRED, RETIRED):
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
        self,
        fields: Any,
        *,
        channel: str,
        delivery_id: str | None,
        body: bytes,
        id_is_key: bool = True,
    ) -> tuple[dict[str, Any], str]:
        now = datetime.now(UTC)
        update = parse_status_update(
            fields, latest=latest_event_time(now, self.settings.payment_date_max_future_days)
        )
        result = await self._apply(update.reference_number, update.status, update.event_at,
                                   channel=channel, delivery_id=delivery_id, body=body,
                                   id_is_key=id_is_key)  # fmt: skip
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
        id_is_key: bool = True,
    ) -> StatusResult:
        topic = self.settings.kafka_topic
        event = StatusEvent(
            reference, status, event_at, cause="webhook", actor=f"webhook:{channel}",
            channel=channel, delivery_id=delivery_id, body=body, id_is_key=id_is_key,
        )  # fmt: skip
        async with self.pool().acquire(timeout=2) as conn:
            # Parked under the reference's parking lock: a batch recording the payment
            # meanwhile sees the row and its after-commit hook applies it (sql/120).
            result = await apply_status(conn, event, topic=topic)
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
