"""Every Kafka client is built from `connection_options`: what it hands aiokafka for each
protocol and mechanism (PLAIN has no broker here to prove it against: these are its
proof), and the topic's replication factor."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from gateway.clients.kafka import (
    connection_options,
    create_producer,
    creation_refused,
    replication_factor,
)
from gateway.config import Settings
from tests.estate.certs import Certificates, make_certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("kafka-certs"))


def test_plaintext_adds_nothing() -> None:
    options = connection_options(Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}))
    assert options == {"bootstrap_servers": "k:9092", "security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_sasl_ssl_carries_mechanism_credentials_and_a_verifying_context(
    mechanism: str,
) -> None:
    s = Settings.from_env({
        "KAFKA_BOOTSTRAP_SERVERS": "pkc-1.europe-west1.gcp.confluent.cloud:9092",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": mechanism,
        "KAFKA_SASL_USERNAME": "API_KEY", "KAFKA_SASL_PASSWORD": "API_SECRET",
    })  # fmt: skip
    options = connection_options(s)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == mechanism
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "API_KEY", "API_SECRET",
    )  # fmt: skip
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    # aiokafka accepts every option (it raises on a mechanism/protocol it cannot do)
    producer = AIOKafkaProducer(**options)
    consumer = AIOKafkaConsumer(**options)
    assert producer.client._sasl_mechanism == mechanism
    assert consumer._client._security_protocol == "SASL_SSL"


def test_sasl_plaintext_has_no_tls_context() -> None:
    s = Settings.from_env({
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p",
    })  # fmt: skip
    assert "ssl_context" not in connection_options(s)


def test_ssl_context_trusts_the_given_ca_and_presents_the_client_certificate(
    certs: Certificates,
) -> None:
    s = Settings.from_env({
        "KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CA_FILE": str(certs.ca),
        "KAFKA_SSL_CERT_FILE": str(certs.client_cert),
        "KAFKA_SSL_KEY_FILE": str(certs.client_key),
    })  # fmt: skip
    context = connection_options(s)["ssl_context"]
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "paygate test CA"),),)
    ]
    assert "sasl_mechanism" not in connection_options(s)


async def test_the_relays_producer_is_built_with_the_same_options(certs: Certificates) -> None:
    s = Settings.from_env({
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p",
        "KAFKA_SSL_CA_FILE": str(certs.ca),
    })  # fmt: skip
    producer = create_producer(s)
    assert producer.client._security_protocol == "SASL_SSL"
    assert producer.client._sasl_mechanism == "SCRAM-SHA-256"


@pytest.mark.parametrize(("configured", "brokers", "expected"), [
    (0, 1, 1), (0, 2, 2), (0, 3, 3), (0, 9, 3), (0, 0, 1), (2, 9, 2), (5, 1, 5),
])  # fmt: skip
def test_replication_factor(configured: int, brokers: int, expected: int) -> None:
    s = Settings.from_env({}, kafka_topic_replication_factor=configured)
    assert replication_factor(s, brokers) == expected


def test_certificate_files_are_checked_at_start_up(tmp_path: Path) -> None:
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match="KAFKA_SSL_CERT_FILE"):
        Settings.from_env({
            "KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERT_FILE": str(tmp_path / "none.pem"),
        })  # fmt: skip


def test_a_refused_topic_creation_is_read_from_the_answer() -> None:
    """CreateTopics answers per topic instead of raising: a managed cluster's refusal was
    logged as "created topic" before."""
    from aiokafka.errors import PolicyViolationError, TopicAuthorizationFailedError

    assert creation_refused([("payment.events", 0, None)]) is None
    assert creation_refused([("payment.events", 36, "Topic already exists.")]) is None
    denied = creation_refused([("payment.events", TopicAuthorizationFailedError.errno, None)])
    assert denied == "TopicAuthorizationFailedError: refused"
    policy = creation_refused(
        [("payment.events", PolicyViolationError.errno, "replication factor must be 3")]
    )
    assert policy == "PolicyViolationError: replication factor must be 3"
