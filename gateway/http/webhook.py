"""POST /api/v1/payments/webhook[/{channel}]: the request path of ARCHITECTURE.md.

in-flight bound -> channel -> allowlist and failing sources -> raw bytes -> signature ->
the channel's rate limit -> the ingest pipeline (parse, validate, L1, group-commit
writer) -> answer. Only a committed write
earns a 2xx.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from gateway import appkeys
from gateway.errors import (
    BadRequest,
    NotFound,
    PaygateError,
    ServiceUnavailable,
    ValidationError,
)
from gateway.http.body import read_body
from gateway.http.context import json_response
from gateway.ingest.channels import Channel
from gateway.ingest.pipeline import DELIVERY_ID_MAX, header_delivery_id
from gateway.ingest.refusals import refusal, refused_outcome
from gateway.ingest.signatures import KeyFetchRequired, SignatureError
from gateway.observability import metrics, tracing

log = logging.getLogger("paygate.webhook")

GENERIC = "generic"
_QUIET = frozenset({"created", "duplicate", "updated"})  # logged at debug: the common case
_requests = metrics.Children(metrics.webhook_requests)
_durations = metrics.Children(metrics.webhook_duration)


def _outcome_of(exc: PaygateError) -> str:
    if exc.status == 401:
        return "unauthorized"
    if exc.status == 403:
        return "forbidden"
    if exc.status == 429:
        return "rate_limited"
    if exc.status == 409:
        return "conflict"
    if exc.status == 413:
        return "payload_too_large"
    if exc.status >= 500:
        return "unavailable"
    return "invalid"


async def handle_webhook(request: web.Request) -> web.Response:
    if tracing.tracer is None:
        return await _handle(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else request.path
    with tracing.server_span(
        f"POST {route}", request.headers, **{"http.request.method": "POST", "http.route": route}
    ) as span:
        response = await _handle(request)
        span.set_attribute("http.response.status_code", response.status)
        return response


async def _handle(request: web.Request) -> web.Response:
    started = time.perf_counter()
    app = request.app
    bound = app[appkeys.INFLIGHT]
    if not bound.enter():
        metrics.rate_limited.labels("all", "in_flight").inc()
        app[appkeys.OUTCOMES].add("all", "overloaded")
        raise ServiceUnavailable("too many requests in flight", code="overloaded", retry_after=1)
    channel: Channel | None = None
    outcome = "error"
    try:
        name = request.match_info.get("channel", GENERIC)
        channel = app[appkeys.CHANNELS].get(name)
        if channel is None:
            _requests("unknown", "not_found").inc()
            app[appkeys.OUTCOMES].add("unknown", "not_found")
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
            app[appkeys.OUTCOMES].add(channel.name, outcome)
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
    guard = app[appkeys.SOURCE_GUARD]
    guard.admit(request, channel)  # allowlist, failing sources: before the body is read
    body = await read_body(request)
    try:
        with tracing.span("paygate.verify"):
            try:
                verified = channel.verify(request.headers, body, now=time.time())
            except KeyFetchRequired as need:  # a key to fetch first (PayPal's certificate)
                verified = await channel.verify_after(need, request.headers, body, now=time.time())
    except SignatureError as exc:
        metrics.signature_failures.labels(channel.name, exc.reason).inc()
        guard.failed(request, channel)
        raise
    pending = guard.charge(channel)  # the channel's rate: only verified deliveries spend it
    if pending is not None:
        await pending  # the shared limiter is leasing this channel's next tokens
    pipeline = app[appkeys.PIPELINE]
    scheme_id = (verified.delivery_id or "")[:DELIVERY_ID_MAX] or None
    # An id read beside the signature is recorded, never a key (gateway.ingest.pipeline).
    signed_id, unsigned_id = (scheme_id, None) if verified.delivery_id_signed else (None, scheme_id)
    answer = pipeline.seen(channel, signed_id) if signed_id else None
    if answer is None:
        try:
            answer = await pipeline.process(
                channel, body, signed_id=signed_id, headers=request.headers,
                unsigned_id=unsigned_id,
            )  # fmt: skip
        except (ValidationError, BadRequest) as exc:
            await _keep_refusal(request, channel, body, scheme_id, exc)
            raise
        if answer.outcome == "ignored":  # a 200, but nothing was recorded: kept for replay
            await app[appkeys.REFUSALS].record(
                refusal(channel, body, scheme_id or header_delivery_id(request.headers),
                        "ignored", answer.body)
            )  # fmt: skip
    if channel.accept_body is not None and answer.status < 300:  # Adyen wants "[accepted]"
        return web.Response(text=channel.accept_body, status=answer.status), answer.outcome
    return json_response(answer.body, answer.status), answer.outcome


async def _keep_refusal(
    request: web.Request, channel: Channel, body: bytes, signed_id: str | None, exc: PaygateError
) -> None:
    """A verified delivery refused by the pipeline is committed before it is answered
    (gateway.ingest.refusals): if it cannot be, the 503 replaces the 4xx."""
    outcome = refused_outcome(exc)
    if outcome is None:
        return
    delivery_id = signed_id or header_delivery_id(request.headers)
    await request.app[appkeys.REFUSALS].record(
        refusal(channel, body, delivery_id, outcome, exc.body())
    )
