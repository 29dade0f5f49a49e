"""Kafka SASL against the one broker reachable here: Tansu 0.6 with `--authentication`.

What it can prove: a client without SASL, and one offering PLAIN, is refused; a SCRAM-SHA-256
or -512 client built from our settings runs the SCRAM exchange to its end and a wrong
password is refused, which `paygate events tail` reports as an authentication failure.

What it cannot: a right password. Tansu 0.6 creates SCRAM users only through a broker
that does not require authentication (`tansu user create` against one that does fails
with "early eof"), and this build's storage engines (memory, S3) keep no users across the
restart that would switch authentication on (checked: after `user create` on an S3-backed
broker, no object was written). The client settings for every mechanism are unit-tested
in tests/gateway/clients/test_kafka_options.py.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from gateway.clients.kafka import create_producer
from gateway.config import Settings
from tests.estate.servers import AdvertisedKafka
from workers.cli import events
from workers.cli.devstack import free_port


@pytest.fixture(scope="module")
async def broker(estate_root: Path) -> AsyncIterator[AdvertisedKafka]:
    port = free_port()
    server = AdvertisedKafka(estate_root / "kafka-sasl", port, authentication=True)
    server.port = port
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def settings(broker: AdvertisedKafka, **env: str) -> Settings:
    return Settings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": broker.url, "KAFKA_REQUEST_TIMEOUT_MS": "3000", **env}
    )


async def start_fails(s: Settings) -> BaseException:
    producer = create_producer(s)
    try:
        await asyncio.wait_for(producer.start(), 20)
    except Exception as exc:
        return exc
    finally:
        await producer.stop()
    raise AssertionError("the broker accepted a client it should have refused")


def broker_log(broker: AdvertisedKafka) -> str:
    return (broker.data_dir / "tansu.log").read_text(errors="replace")


async def test_a_client_without_sasl_is_refused(broker: AdvertisedKafka) -> None:
    exc = await start_fails(settings(broker))
    assert isinstance(exc, KafkaConnectionError)
    assert "NotAuthenticated" in broker_log(broker)


async def test_plain_is_not_offered_by_this_broker(broker: AdvertisedKafka) -> None:
    exc = await start_fails(settings(
        broker, KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", KAFKA_SASL_MECHANISM="PLAIN",
        KAFKA_SASL_USERNAME="paygate", KAFKA_SASL_PASSWORD="whatever",
    ))  # fmt: skip
    assert isinstance(exc, KafkaConnectionError)
    assert "NoSharedMechanism" in broker_log(broker)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_scram_with_a_wrong_password_is_refused(
    broker: AdvertisedKafka, mechanism: str, capsys: pytest.CaptureFixture[str]
) -> None:
    s = settings(
        broker, KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", KAFKA_SASL_MECHANISM=mechanism,
        KAFKA_SASL_USERNAME="paygate", KAFKA_SASL_PASSWORD="not-the-password",
    )  # fmt: skip
    exc = await start_fails(s)
    # Past the connection and the mechanism handshake: refused by the exchange itself.
    assert not isinstance(exc, KafkaConnectionError), exc

    args: dict[str, Any] = dict(
        limit=None, topic="payment.events", from_beginning=True, follow=False, key=None
    )
    code = await asyncio.wait_for(events.run(argparse.Namespace(**args), s), 60)
    err = capsys.readouterr().err
    assert code == 1
    assert f"SASL {mechanism} authentication as 'paygate' failed" in err, err
    assert "not-the-password" not in err
