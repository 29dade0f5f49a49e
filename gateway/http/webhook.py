"""POST /api/v1/payments/webhook[/{channel}]: the request path of ARCHITECTURE.md.

raw bytes -> signature -> parse -> validate -> L1 -> group-commit writer -> answer.
Only a committed write earns a 2xx.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from gateway import appkeys
from gateway.db.payments import Candidate
from gateway.domain.model import IDENTITY_FIELDS, Payment
from gateway.domain.validation import DateWindow, date_window, validate_payment
from gateway.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PaygateError,
    ServiceUnavailable,
    ValidationError,
)
from gateway.http.body import read_body
from gateway.http.context import json_response
from gateway.ingest.channels import Channel
from gateway.ingest.signatures import SignatureError
from gateway.ingest.writer import CONFLICT, CREATED, DUPLICATE, WriteResult
from gateway.observability import metrics

log = logging.getLogger("paygate.webhook")

GENERIC = "generic"


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


_windows = _WindowCache()
_QUIET = frozenset({"created", "duplicate", "updated"})  # logged at debug: the common case
_requests = metrics.Children(metrics.webhook_requests)
_durations = metrics.Children(metrics.webhook_duration)
_dedup_hits = metrics.Children(metrics.dedup_hits)


def _outcome_of(exc: PaygateError) -> str:
    if exc.status == 401:
        return "unauthorized"
    if exc.status == 403:
        return "forbidden"
    if exc.status == 429:
        return "rate_limited"
    if exc.status == 409:
        return "conflict"
    if exc.status >= 500:
        return "unavailable"
    return "invalid"


async def handle_webhook(request: web.Request) -> web.Response:
    started = time.perf_counter()
    app = request.app
    bound = app[appkeys.INFLIGHT]
    if not bound.enter():
        metrics.rate_limited.labels("all", "in_flight").inc()
        raise ServiceUnavailable("too many requests in flight", code="overloaded", retry_after=1)
    channel: Channel | None = None
    outcome = "error"
    try:
        name = request.match_info.get("channel", GENERIC)
        channel = app[appkeys.CHANNELS].get(name)
        if channel is None:
            _requests("unknown", "not_found").inc()
            raise NotFound(f"unknown channel {name[:64]!r}", code="unknown_channel")
        response, outcome = await _process(request, channel)
        return response
    except PaygateError as exc:
        outcome = _outcome_of(exc)
        raise
    finally:
        bound.leave()
        if channel is not None:
            elapsed = time.perf_counter() - started
            _requests(channel.name, outcome).inc()
            _durations(channel.name).observe(elapsed)
            level = logging.DEBUG if outcome in _QUIET else logging.INFO
            if log.isEnabledFor(level):
                log.log(
                    level,
                    "webhook %s",
                    outcome,
                    extra={"channel": channel.name, "outcome": outcome,
                           "duration_ms": round(elapsed * 1000, 3)},
                )  # fmt: skip


async def _process(request: web.Request, channel: Channel) -> tuple[web.Response, str]:
    app = request.app
    settings = app[appkeys.SETTINGS]
    app[appkeys.SOURCE_GUARD].check(request, channel)  # allowlist and rate limit, before the body

    body = await read_body(request, settings.client_timeout_seconds)
    try:
        verified = channel.verify(request.headers, body, now=time.time())
    except SignatureError as exc:
        metrics.signature_failures.labels(channel.name, exc.reason).inc()
        raise

    replay = app[appkeys.REPLAY_GUARD]
    signed_id = (verified.delivery_id or "")[:255]
    if signed_id:
        # A retry of a delivery already answered, known from the signed headers alone:
        # answered without parsing the body again (the common case of a provider retry).
        seen = replay.seen(channel.name, signed_id)
        if seen is not None:
            return _duplicate(seen, "delivery")

    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("body is not valid JSON", code="invalid_json") from None
    fields = channel.extract(doc)
    if isinstance(fields, dict) and "ignored_event_type" in fields:
        return json_response(
            {"status": "ignored", "event_type": str(fields["ignored_event_type"])[:100]}
        ), "ignored"

    delivery_id = signed_id or (_delivery_id(request, fields) or "")[:255] or None
    if delivery_id and not signed_id:  # ids from other headers or the body
        seen = replay.seen(channel.name, delivery_id)
        if seen is not None:
            return _duplicate(seen, "delivery")

    statuses = app[appkeys.STATUS_APPLIER]
    if statuses.is_status_only(fields):
        result_body, outcome = await statuses.apply_update(
            fields, channel=channel.name, delivery_id=delivery_id, body=body
        )
        return json_response(result_body, 202 if outcome == "deferred" else 200), outcome

    payment = validate_payment(
        fields,
        window=_windows.get(
            settings.partition_retention_months, settings.payment_date_max_future_days
        ),
    )
    if channel.identity_fields != IDENTITY_FIELDS:
        payment = dataclasses.replace(payment, identity=channel.identity_fields)
    known = app[appkeys.DEDUP].lookup_local(payment.reference_number)
    if (
        known is not None
        and known.payload_hash == payment.payload_hash
        and known.status == payment.status
    ):
        return _duplicate(known.payment_id, "memory")

    # The writer fails the future with 503 write_timeout after WEBHOOK_TIMEOUT_MS.
    result = await app[appkeys.WRITER].submit(Candidate(payment, channel.name, delivery_id, body))
    if delivery_id and result.outcome in (CREATED, DUPLICATE):
        replay.remember(channel.name, delivery_id, result.payment_id)
    return await _answer(request, channel, payment, result, delivery_id, body)


def _duplicate(payment_id: str, layer: str) -> tuple[web.Response, str]:
    """The 200 for a delivery already recorded, counted by the layer that knew it."""
    _dedup_hits(layer).inc()
    return json_response({"status": "duplicate", "payment_id": payment_id}), "duplicate"


def _delivery_id(request: web.Request, fields: Any) -> str | None:
    """Provider delivery ids that are not part of the signature scheme."""
    for header in ("Idempotency-Key", "X-GitHub-Delivery", "X-Shopify-Webhook-Id"):
        value = request.headers.get(header)
        if value:
            return value[:255]
    if isinstance(fields, dict) and isinstance(fields.get("event_id"), str):
        return str(fields["event_id"])[:255]
    return None


async def _answer(
    request: web.Request,
    channel: Channel,
    payment: Payment,
    result: WriteResult,
    delivery_id: str | None,
    body: bytes,
) -> tuple[web.Response, str]:
    if result.outcome == CREATED:
        return json_response({"status": "created", "payment_id": result.payment_id}, 201), "created"
    if result.outcome == CONFLICT:
        raise_conflict(result)
    if result.outcome == DUPLICATE:
        if result.status is not None and result.status != payment.status:
            out, outcome = await request.app[appkeys.STATUS_APPLIER].apply_payment(
                payment, channel=channel.name, delivery_id=delivery_id, body=body
            )
            return json_response(out, 202 if outcome == "deferred" else 200), outcome
        return _duplicate(result.payment_id, result.layer)
    raise ValidationError("body", "the payment was refused by the database")


def raise_conflict(result: WriteResult) -> None:
    raise Conflict(
        "this reference was recorded with different amount, account, cif or payment date",
        code="reference_conflict",
        payment_id=result.payment_id,
    )
