"""Traces exported over OTLP/HTTP by a real `paygate serve` to a receiver this test runs,
switched on by nothing but the standard OTEL_* variables; the webhook's trace id (from
the caller's `traceparent`) reaches the receiver and the Kafka event's header."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import asyncpg
import orjson
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from gateway.notify import Wakeup
from tests.conftest import make_settings, wait_for
from tests.faults.conftest import Faults
from tests.webhooks import payment_doc, signed_headers
from tests.workers.test_outbox import headers, read_topic
from workers.cli.devstack import free_port
from workers.registry import running_workers

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


@dataclass
class Receiver:
    """An OTLP/HTTP trace endpoint: decodes each export, keeps (service, trace id, name)."""

    port: int = field(default_factory=free_port)
    spans: list[tuple[str, str, str, list[str]]] = field(default_factory=list)

    async def export(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        for resource_spans in message.resource_spans:
            service = next(
                (a.value.string_value for a in resource_spans.resource.attributes
                 if a.key == "service.name"), "",
            )  # fmt: skip
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    links = [link.trace_id.hex() for link in span.links]
                    self.spans.append((service, span.trace_id.hex(), span.name, links))
        return web.Response(content_type="application/x-protobuf", body=b"")

    def named(self, name: str) -> list[tuple[str, str, str, list[str]]]:
        return [s for s in self.spans if s[2] == name]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", found.export)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", found.port).start()
    try:
        yield found
    finally:
        await runner.cleanup()


async def test_webhook_trace_reaches_the_collector_and_the_kafka_header(
    faults: Faults, receiver: Receiver, pool: asyncpg.Pool
) -> None:
    topic = faults.new_topic()
    gw = await faults.gateway(
        "serve",
        topic=topic,
        otel_exporter_otlp_endpoint=f"http://127.0.0.1:{receiver.port}",
        otel_service_name="paygate-under-test",
        otel_bsp_schedule_delay="100",
    )
    doc = payment_doc()
    body = orjson.dumps(doc)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{gw.url}/api/v1/payments/webhook",
            data=body,
            headers={**signed_headers(body), "traceparent": TRACEPARENT},
        ) as resp,
    ):
        assert resp.status == 201

    async def exported() -> bool:
        names = {name for _, trace, name, _ in receiver.spans if trace == TRACE_ID}
        batches = receiver.named("paygate.group_commit.batch")
        return names >= {
            "POST /api/v1/payments/webhook", "paygate.verify", "paygate.dedup",
            "paygate.group_commit",
        } and any(TRACE_ID in links for *_, links in batches)  # fmt: skip

    await wait_for(exported, timeout=20)
    assert {service for service, *_ in receiver.spans} == {"paygate-under-test"}

    # The relay (in this process, tracing off) passes on the context the server recorded.
    settings = make_settings(faults.stack, kafka_topic=topic, outbox_poll_interval_ms=50)
    async with running_workers(pool, settings, Wakeup(), only=["outbox"]):
        [record] = await read_topic(settings, 1)
    assert record.key == doc["reference_number"].encode()
    assert headers(record)["traceparent"].split("-")[1] == TRACE_ID
