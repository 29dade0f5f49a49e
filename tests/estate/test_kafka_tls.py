"""Kafka over TLS with client certificates: Tansu behind Debian's stunnel4 (Tansu 0.6
cannot speak TLS itself). The relay publishes webhooks' events over TLS and `paygate
events tail` reads them back; a host name the certificate does not name, a CA that did
not sign it, or a missing client certificate is refused."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka.errors import KafkaConnectionError

from gateway.clients.kafka import create_producer, ensure_topic
from gateway.config import Settings
from gateway.notify import Wakeup
from gateway.observability.probes import HealthProbes
from tests import stack as stack_module
from tests.conftest import make_settings, wait_for
from tests.estate.certs import Certificates
from tests.estate.servers import TlsKafka
from tests.webhooks import payment_doc, post_webhook
from workers.cli import events
from workers.registry import running_workers


@pytest.fixture(scope="module")
async def kafka(estate_root: Path, certs: Certificates) -> AsyncIterator[TlsKafka]:
    server = TlsKafka(estate_root / "kafka-tls", certs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def tls_settings(
    stack: stack_module.TestStack, kafka: TlsKafka, certs: Certificates, **changes: Any
) -> Settings:
    options: dict[str, Any] = {
        "kafka_bootstrap_servers": kafka.bootstrap,
        "kafka_security_protocol": "SSL",
        "kafka_ssl_ca_file": str(certs.ca),
        "kafka_ssl_cert_file": str(certs.client_cert),
        "kafka_ssl_key_file": str(certs.client_key),
        "kafka_request_timeout_ms": 3000,
        "outbox_poll_interval_ms": 100,
    }
    options.update(changes)
    return make_settings(stack, **options)


async def tail(
    settings: Settings, capsys: pytest.CaptureFixture[str], **args: Any
) -> tuple[int, list[Any], str]:
    namespace = argparse.Namespace(
        limit=None, topic=None, from_beginning=True, follow=False, key=None, events_action="tail"
    )
    for name, value in args.items():
        setattr(namespace, name, value)
    code = await asyncio.wait_for(events.run(namespace, settings), 60)
    out, err = capsys.readouterr()
    return code, [orjson.loads(line) for line in out.splitlines()], err


async def test_relay_publishes_and_events_tail_reads_over_tls(
    make_client: Callable[..., Awaitable[Any]],
    db: asyncpg.Pool,
    stack: stack_module.TestStack,
    kafka: TlsKafka,
    certs: Certificates,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = tls_settings(stack, kafka, certs)
    await ensure_topic(settings)  # over TLS too
    client = await make_client(settings)
    refs = []
    for _ in range(3):
        doc = payment_doc()
        status, _, _ = await post_webhook(client, doc)
        assert status == 201
        refs.append(doc["reference_number"])

    async with running_workers(db, settings, Wakeup(), only=["outbox"]):

        async def published() -> bool:
            code, lines, _ = await tail(settings, capsys)
            return code == 0 and {line["key"] for line in lines} >= set(refs)

        await wait_for(published, timeout=60, interval=0.5)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"bootstrap": "localhost"}, "Hostname mismatch"),
        ({"kafka_ssl_ca_file": "other_ca"}, "self-signed certificate in certificate chain"),
        ({"kafka_ssl_cert_file": "", "kafka_ssl_key_file": ""}, None),
    ],
    ids=["host-not-in-certificate", "ca-that-did-not-sign-it", "no-client-certificate"],
)
async def test_a_wrong_setting_is_refused(
    stack: stack_module.TestStack,
    kafka: TlsKafka,
    certs: Certificates,
    capsys: pytest.CaptureFixture[str],
    changes: dict[str, str],
    reason: str | None,
) -> None:
    changes = dict(changes)
    if changes.pop("bootstrap", None):
        changes["kafka_bootstrap_servers"] = f"localhost:{kafka.stunnel.port}"
    if changes.get("kafka_ssl_ca_file") == "other_ca":
        changes["kafka_ssl_ca_file"] = str(certs.other_ca)
    settings = tls_settings(stack, kafka, certs, **changes)

    producer = create_producer(settings)
    with pytest.raises(KafkaConnectionError):
        try:
            await asyncio.wait_for(producer.start(), 20)
        finally:
            await producer.stop()
    assert not await HealthProbes(settings, None, None).kafka()  # type: ignore[arg-type]

    code, lines, err = await tail(settings, capsys)
    assert code == 1 and not lines
    assert "cannot reach the broker" in err
    if reason is not None:
        assert "TLS certificate was refused" in err and reason in err, err


async def test_the_right_settings_reach_the_broker(
    stack: stack_module.TestStack, kafka: TlsKafka, certs: Certificates
) -> None:
    """The control for the refusals above: the same checks pass with every setting right."""
    settings = tls_settings(stack, kafka, certs)
    assert await HealthProbes(settings, None, None).kafka()  # type: ignore[arg-type]
    producer = create_producer(settings)
    try:
        await asyncio.wait_for(producer.start(), 20)
    finally:
        await producer.stop()
