"""One verified delivery's way to an answer: parse, map, validate, deduplicate, record.

The webhook handler runs this after the signature check passed on the raw bytes; so
can anything that re-processes bytes that were verified when they arrived (a replay of
a stored delivery). Only a committed write earns a 2xx: the writer's future resolves
after the commit, and every refusal is a PaygateError the caller renders.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.config import Settings
from gateway.db.payments import Candidate
from gateway.domain.model import IDENTITY_FIELDS, Payment
from gateway.domain.validation import DateWindow, date_window, validate_payment
from gateway.errors import BadRequest, Conflict, PaygateError, ValidationError
from gateway.ingest.channels import Channel
from gateway.ingest.dedup import Deduplicator
from gateway.ingest.protocols import ReplayGuard, StatusApplier
from gateway.ingest.writer import CONFLICT, CREATED, DUPLICATE, GroupCommitWriter, WriteResult
from gateway.observability import metrics, tracing

# Provider delivery ids that no signature covers, by header: kept for the record only.
DELIVERY_ID_HEADERS = (
    "Idempotency-Key",
    "X-GitHub-Delivery",
    "X-Shopify-Webhook-Id",
    "x-razorpay-event-id",
)
DELIVERY_ID_MAX = 255
# Events of one multi-event delivery processed at once (each status update holds a
# pool connection while it runs; payments share the writer's batches).
BATCH_CONCURRENCY = 8
# A batch is counted under the most consequential outcome among its events.
_BATCH_OUTCOMES = (
    "created", "updated", "deferred", "retired", "stale", "duplicate", "ignored"
)  # fmt: skip
# Accepted, not applied: parked for a payment to come, or kept for review (a retired month).
_ACCEPTED = frozenset({"deferred", "retired"})
# Outcomes whose effect is committed and names a payment: a retry may be answered from memory.
_REMEMBERED = frozenset({"created", "duplicate", "updated", "stale"})


# Not frozen: one per payment, and a frozen init sets each field through
# object.__setattr__ (4x the cost). Never changed once made.
@dataclass(slots=True)
class Answer:
    status: int  # HTTP status
    body: dict[str, Any]
    outcome: str  # what the metrics and logs call it


class _WindowCache:
    """The accepted payment_date range moves slowly: recompute it once a minute."""

    def __init__(self) -> None:
        self.minute = -1
        self.window: DateWindow | None = None

    def get(self, retention_months: int, future_days: int) -> DateWindow:
        minute = int(time.time() // 60)
        if minute != self.minute or self.window is None:
            self.window = date_window(datetime.now(UTC), retention_months, future_days)
            self.minute = minute
        return self.window


_dedup_hits = metrics.Children(metrics.dedup_hits)


@dataclass(eq=False)
class Pipeline:
    """The parts a delivery passes through, built once the app's resources exist."""

    settings: Settings
    dedup: Deduplicator
    writer: GroupCommitWriter
    statuses: StatusApplier
    replay: ReplayGuard
    _windows: _WindowCache = dataclasses.field(default_factory=_WindowCache)

    def seen(self, channel: Channel, delivery_id: str) -> Answer | None:
        """A retry of a delivery answered recently, known from its id alone: answered
        without parsing the body again (the common case of a provider retry)."""
        payment_id = self.replay.seen(channel.name, delivery_id)
        return None if payment_id is None else duplicate(payment_id, "delivery")

    async def process(
        self,
        channel: Channel,
        body: bytes,
        *,
        signed_id: str | None,
        headers: Mapping[str, str],
        unsigned_id: str | None = None,
    ) -> Answer:
        """Everything after the signature: `signed_id` is the delivery id the scheme
        signed (already looked up with `seen`), `unsigned_id` one it reads beside the
        signature (kept for the record only), `headers` the request's. A channel whose
        deliveries carry several events (Adyen, GoCardless) has each one recorded on its
        own (`_process_batch`)."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise BadRequest("body is not valid JSON", code="invalid_json") from None
        events = channel.split(doc)
        if events is not None:
            return await self._process_batch(channel, events, body, headers)
        return await self.process_fields(
            channel, channel.extract(doc), body, signed_id=signed_id, headers=headers,
            unsigned_id=unsigned_id,
        )  # fmt: skip

    async def process_fields(
        self,
        channel: Channel,
        fields: Any,
        body: bytes,
        *,
        signed_id: str | None,
        headers: Mapping[str, str],
        unsigned_id: str | None = None,
    ) -> Answer:
        """One mapped event (`channel.extract`'s output) on its way to an answer.

        Its delivery id is the scheme's signed one, else the body's `event_id` (signed with
        the body): those are keys (the replay guard, a parked update's retry). Failing both,
        an id no signature covers is recorded with the delivery and is never a key: it could
        name another delivery and have that one answered `duplicate`, or not parked.
        """
        if isinstance(fields, dict) and "ignored_event_type" in fields:
            event_type = str(fields["ignored_event_type"])[:100]
            return Answer(200, {"status": "ignored", "event_type": event_type}, "ignored")

        key = signed_id
        if key is None:
            key = body_event_id(fields)
            if key is not None:  # the body's own id: not looked up by the caller
                seen = self.seen(channel, key)
                if seen is not None:
                    return seen
        delivery_id = key or unsigned_id or header_delivery_id(headers)

        if self.statuses.is_status_only(fields):
            out, outcome = await self.statuses.apply_update(
                fields, channel=channel.name, delivery_id=delivery_id, body=body,
                id_is_key=key is not None,
            )  # fmt: skip
            return self._remembered(
                channel, key, Answer(202 if outcome in _ACCEPTED else 200, out, outcome)
            )

        payment = self.validated(channel, fields)
        with tracing.span("paygate.dedup"):
            known = self.dedup.lookup_local(payment.reference_number)
        if (
            known is not None
            and known.payload_hash == payment.payload_hash
            and known.status == payment.status
        ):
            return duplicate(known.payment_id, "memory")

        # The writer fails the future with 503 write_timeout after WEBHOOK_TIMEOUT_MS.
        candidate = Candidate(payment, channel.name, delivery_id, body)
        if tracing.tracer is None:
            result = await self.writer.submit(candidate)
        else:
            with tracing.span("paygate.group_commit"):
                candidate.trace = tracing.current()
                result = await self.writer.submit(candidate)
        answer = await self._answer(channel, payment, result, delivery_id, body)
        return self._remembered(channel, key, answer)

    def validated(self, channel: Channel, fields: Any) -> Payment:
        """One mapped event as a Payment, in this channel's currency and identity."""
        settings = self.settings
        window = self._windows.get(
            settings.partition_retention_months, settings.payment_date_max_future_days
        )
        currency, places = channel.money_of(fields)
        payment = validate_payment(fields, window=window, currency=currency, places=places)
        if channel.identity_fields != IDENTITY_FIELDS:
            payment = dataclasses.replace(payment, identity=channel.identity_fields)
        return payment

    def _remembered(self, channel: Channel, delivery_id: str | None, answer: Answer) -> Answer:
        """Remember a delivery id only once everything it carried is committed: a payment
        re-sent with a new status is a duplicate to the writer before its status change
        runs, and if that change then fails (503), the retry must not be answered from
        here. A parked update (no payment yet) is not remembered either: its retry parks
        nothing twice (sql/090)."""
        if delivery_id and answer.outcome in _REMEMBERED:
            payment_id = answer.body.get("payment_id")
            if isinstance(payment_id, str):
                self.replay.remember(channel.name, delivery_id, payment_id)
        return answer

    async def _process_batch(
        self, channel: Channel, events: list[Any], body: bytes, headers: Mapping[str, str]
    ) -> Answer:
        """Each event of a multi-event delivery recorded on its own; a 2xx only when every
        one of them is committed (or ignored), else the first error is raised, naming the
        event, with a retriable one first. A retry then records nothing twice: events
        already committed answer `duplicate` (replay guard, reference table, state machine).

        Events naming the same reference run in the order the provider listed them,
        different references concurrently. Each event's raw body in webhook_events is the
        delivery itself when it holds one event, else that event's own JSON (a stored event
        is processed again as a delivery of one, see `Channel.split`).
        """
        results: list[Answer | PaygateError | None] = [None] * len(events)
        prepared: dict[int, tuple[Any, bytes]] = {}
        chains: dict[str, list[int]] = {}
        for index, event in enumerate(events):
            try:
                fields = channel.extract(event)
            except PaygateError as exc:
                results[index] = exc
                continue
            prepared[index] = (fields, body if len(events) == 1 else orjson.dumps(event))
            ref = fields.get("reference_number") if isinstance(fields, dict) else None
            chains.setdefault(ref if isinstance(ref, str) else f"#{index}", []).append(index)

        gate = asyncio.Semaphore(BATCH_CONCURRENCY)

        async def run(indexes: list[int]) -> None:
            async with gate:
                for index in indexes:
                    fields, event_body = prepared[index]
                    results[index] = await self._event(channel, fields, event_body, headers)

        await asyncio.gather(*(run(indexes) for indexes in chains.values()))
        failures = [(i, r) for i, r in enumerate(results) if isinstance(r, PaygateError)]
        if failures:
            index, error = next(((i, e) for i, e in failures if e.retriable), failures[0])
            error.extra.setdefault("event_index", index)
            raise error
        answers = [r for r in results if isinstance(r, Answer)]
        outcomes = {a.outcome for a in answers}
        outcome = next((o for o in _BATCH_OUTCOMES if o in outcomes), "ignored")
        return Answer(200, {"status": "accepted", "events": [a.body for a in answers]}, outcome)

    async def _event(
        self, channel: Channel, fields: Any, body: bytes, headers: Mapping[str, str]
    ) -> Answer | PaygateError:
        """One event of a batch; its id is covered by the delivery's signature."""
        event_id = fields.get("event_id") if isinstance(fields, dict) else None
        delivery_id = str(event_id)[:DELIVERY_ID_MAX] if event_id else None
        try:
            if delivery_id:
                seen = self.seen(channel, delivery_id)
                if seen is not None:
                    return seen
            return await self.process_fields(
                channel, fields, body, signed_id=delivery_id, headers=headers
            )
        except PaygateError as exc:
            return exc

    async def _answer(
        self,
        channel: Channel,
        payment: Payment,
        result: WriteResult,
        delivery_id: str | None,
        body: bytes,
    ) -> Answer:
        if result.outcome == CREATED:
            return Answer(201, {"status": "created", "payment_id": result.payment_id}, "created")
        if result.outcome == CONFLICT:
            raise Conflict(
                "this reference was recorded with different amount, account, cif or payment date",
                code="reference_conflict",
                payment_id=result.payment_id,
            )
        if result.outcome == DUPLICATE:
            if result.status is not None and result.status != payment.status:
                out, outcome = await self.statuses.apply_payment(
                    payment, channel=channel.name, delivery_id=delivery_id, body=body
                )
                return Answer(202 if outcome in _ACCEPTED else 200, out, outcome)
            return duplicate(result.payment_id, result.layer)
        raise ValidationError("body", "the payment was refused by the database")


def duplicate(payment_id: str, layer: str) -> Answer:
    """The 200 for a delivery already recorded, counted by the layer that knew it."""
    _dedup_hits(layer).inc()
    return Answer(200, {"status": "duplicate", "payment_id": payment_id}, "duplicate")


def body_event_id(fields: Any) -> str | None:
    """The event id the provider put in the (signed) body."""
    if isinstance(fields, dict) and isinstance(fields.get("event_id"), str):
        return str(fields["event_id"])[:DELIVERY_ID_MAX] or None
    return None


def header_delivery_id(headers: Mapping[str, str]) -> str | None:
    """A delivery id from a header no signature covers: for the record only."""
    for header in DELIVERY_ID_HEADERS:
        value = headers.get(header)
        if value:
            return value[:DELIVERY_ID_MAX]
    return None
