"""OpenTelemetry traces through the real app, relay and staging worker, collected by the
SDK's in-memory exporter: a webhook's span continues the caller's `traceparent`, has
verify/dedup/group-commit children, the writer's batch span links to the requests it
carried, and the event published to Kafka carries the webhook's trace in `traceparent`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.notify import Wakeup
from gateway.observability import tracing
from tests import stack as stack_module
from tests.conftest import make_settings, wait_for
from tests.events import queued_events
from tests.webhooks import payment_doc, post_webhook, signed_headers
from tests.workers.test_outbox import headers, read_topic
from workers.registry import running_workers
from workers.staging import StagingWorker

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)
        provider.shutdown()


async def post_traced(client: Any, doc: dict[str, Any]) -> int:
    body = orjson.dumps(doc)
    traced = {**signed_headers(body), "traceparent": TRACEPARENT}
    status, _, _ = await post_webhook(client, doc, raw=body, headers=traced)
    return status


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


# -- when it is on ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "paygate-eu"}, False),  # naming is not asking
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_traces_are_off_unless_the_otel_variables_ask(environ: dict[str, str], on: bool) -> None:
    assert tracing.wanted(environ) is on


def test_configure_leaves_tracing_off_by_default() -> None:
    assert tracing.configure({}) is False
    assert tracing.tracer is None
    assert tracing.span("x") is tracing.span("y")  # the shared no-op
    assert tracing.current() is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "expected otlp, console or none"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "http/protobuf"),
    ],
)
def test_an_exporter_paygate_cannot_run_stops_start_up(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        tracing.configure(environ)
    assert tracing.tracer is None


def test_traceparent_round_trips() -> None:
    provider = TracerProvider()
    tracing.use(provider)
    try:
        context = tracing.parse(TRACEPARENT)
        assert tracing.traceparent(context) == TRACEPARENT
        assert tracing.parse("00-zz-00f067aa0ba902b7-01") is None
        assert tracing.parse(f"00-{'0' * 32}-{PARENT_ID}-01") is None  # invalid trace id
        assert tracing.kafka_headers(TRACEPARENT) == [("traceparent", TRACEPARENT.encode())]
        assert tracing.kafka_headers(None) == []
    finally:
        tracing.use(None)
        provider.shutdown()


# -- through the app ----------------------------------------------------------------------


async def test_a_webhook_continues_the_callers_trace_with_children_and_a_linked_batch(
    make_client: Callable[..., Awaitable[Any]],
    db: asyncpg.Pool,
    spans: InMemorySpanExporter,
) -> None:
    client = await make_client()
    assert await post_traced(client, payment_doc()) == 201

    [server] = named(spans, "POST /api/v1/payments/webhook")
    assert f"{server.context.trace_id:032x}" == TRACE_ID
    assert server.parent is not None and f"{server.parent.span_id:016x}" == PARENT_ID
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 201
    children = {
        s.name: s
        for s in spans.get_finished_spans()
        if s.parent is not None and s.parent.span_id == server.context.span_id
    }
    assert set(children) == {"paygate.verify", "paygate.dedup", "paygate.group_commit"}
    [batch] = named(spans, "paygate.group_commit.batch")
    assert batch.parent is None  # a batch carries many requests: linked, not parented
    linked = {(link.context.trace_id, link.context.span_id) for link in batch.links}
    commit = children["paygate.group_commit"].context
    assert (commit.trace_id, commit.span_id) in linked


async def test_a_webhook_without_traceparent_starts_a_trace(
    make_client: Callable[..., Awaitable[Any]],
    db: asyncpg.Pool,
    spans: InMemorySpanExporter,
) -> None:
    client = await make_client()
    status, _, _ = await post_webhook(client, payment_doc())
    assert status == 201
    [server] = named(spans, "POST /api/v1/payments/webhook")
    assert server.parent is None and server.context.trace_id != int(TRACE_ID, 16)


async def test_the_published_event_carries_the_webhooks_trace(
    make_client: Callable[..., Awaitable[Any]],
    db: asyncpg.Pool,
    stack: stack_module.TestStack,
    spans: InMemorySpanExporter,
) -> None:
    settings = make_settings(stack, outbox_poll_interval_ms=50)
    client = await make_client(settings)
    doc = payment_doc()
    assert await post_traced(client, doc) == 201

    async with running_workers(db, settings, Wakeup(), only=["outbox"]):
        [record] = await read_topic(settings, 1)
    carried = headers(record)["traceparent"]
    assert carried.split("-")[1] == TRACE_ID
    [commit] = named(spans, "paygate.group_commit")
    assert carried == tracing.traceparent(commit.context)  # its parent is the request's
    [relay_round] = named(spans, "paygate.relay.round")
    assert TRACE_ID in {f"{link.context.trace_id:032x}" for link in relay_round.links}


async def test_nothing_is_carried_while_tracing_is_off(
    make_client: Callable[..., Awaitable[Any]], db: asyncpg.Pool, stack: stack_module.TestStack
) -> None:
    assert tracing.tracer is None
    settings = make_settings(stack, outbox_poll_interval_ms=50)
    client = await make_client(settings)
    assert await post_traced(client, payment_doc()) == 201
    # nothing stored for it: the log row holds no array (bytes per payment)
    assert await db.fetchval("SELECT count(*) FROM payment_service.event_log") == 1
    assert await db.fetchval("SELECT traceparents FROM payment_service.event_log") is None
    async with running_workers(db, settings, Wakeup(), only=["outbox"]):
        [record] = await read_topic(settings, 1)
    assert "traceparent" not in headers(record)


async def test_a_staging_batch_is_a_span_and_its_events_carry_it(
    db: asyncpg.Pool, stack: stack_module.TestStack, spans: InMemorySpanExporter
) -> None:
    from tests.workers.test_staging import load, row

    await load(db, [row("STG-TRACE-1"), row("STG-TRACE-2")])
    settings: Settings = make_settings(stack)
    worker = StagingWorker(db, settings)
    assert await worker.run_once() is False
    [batch] = named(spans, "paygate.staging.batch")
    assert batch.attributes is not None and batch.attributes["paygate.batch.rows"] == 2

    async def carried() -> list[str | None]:
        return [r["traceparent"] for r in await queued_events(db)]

    values = await wait_for(carried)
    assert values == [tracing.traceparent(batch.context)] * 2
