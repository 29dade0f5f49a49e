"""Kafka client construction and topic set-up, shared by the relay, health, `dev` and
`events tail`: every client gets the same security options (`connection_options`)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from gateway.config import Settings

log = logging.getLogger(__name__)


def tls_context(settings: Settings) -> ssl.SSLContext:
    """Verifies the broker's certificate and host name (the system's CAs unless
    KAFKA_SSL_CA_FILE names others), and presents a client certificate when one is set."""
    context = ssl.create_default_context(cafile=settings.kafka_ssl_ca_file or None)
    if settings.kafka_ssl_cert_file:
        context.load_cert_chain(settings.kafka_ssl_cert_file, settings.kafka_ssl_key_file or None)
    return context


def connection_options(settings: Settings) -> dict[str, Any]:
    """The bootstrap servers and security keyword arguments every aiokafka client takes
    (producer, consumer, admin, bare client): one place, so none of them is left
    speaking plaintext to a cluster that wants TLS."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": protocol,
    }
    if protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = tls_context(settings)
    if protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password
    return options


async def tls_refusal(settings: Settings, timeout: float = 5.0) -> str | None:
    """Why the first bootstrap server's certificate is refused, in words, or None.

    aiokafka logs the cause of a failed bootstrap but raises only "Unable to bootstrap":
    a command that failed to connect asks here, so a host name that does not match the
    certificate is named as such instead of looking like a dead broker."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    first = settings.kafka_bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    host = host.strip("[]")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port), ssl=tls_context(settings)), timeout
        )
    except ssl.SSLCertVerificationError as exc:
        return f"the broker's TLS certificate was refused ({exc.verify_message})"
    except (OSError, TimeoutError, ValueError):
        return None
    writer.close()
    return None


def create_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **connection_options(settings),
        client_id=settings.kafka_client_id,
        acks="all",
        # The embedded broker has no InitProducerId; real Kafka should turn this on.
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=5,
        max_batch_size=256 * 1024,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        retry_backoff_ms=100,
    )


async def ensure_topic(settings: Settings, timeout: float = 20.0) -> None:
    """Create the events topic if it is missing. Managed clusters often forbid creating
    topics (ACLs, policies): then it is a warning that says what to do, and the relay
    reports publish failures until an operator creates it (it goes on if it exists)."""
    admin = AIOKafkaAdminClient(
        **connection_options(settings),
        client_id=f"{settings.kafka_client_id}-admin",
        request_timeout_ms=int(timeout * 1000),
    )
    topic = settings.kafka_topic
    try:
        await asyncio.wait_for(admin.start(), timeout)
        try:
            if topic in await admin.list_topics():
                return
            brokers = len(admin._client.cluster.brokers())  # known since start(): no round trip
            factor = replication_factor(settings, brokers)
            response = await admin.create_topics(
                [NewTopic(topic, settings.kafka_topic_partitions, factor)]
            )
        except TopicAlreadyExistsError:
            return
        except KafkaError as exc:
            log.warning(cannot_create(topic, settings, describe_kafka_error(exc)))
            return
        refused = creation_refused(response.topic_errors)
        if refused:
            log.warning(cannot_create(topic, settings, refused))
            return
        log.info("created topic %s (%d partitions, replication factor %d)",
                 topic, settings.kafka_topic_partitions, factor)  # fmt: skip
    finally:
        await admin.close()


def creation_refused(topic_errors: list[Any]) -> str | None:
    """The broker's reason for not creating the topic (CreateTopics answers per topic,
    it does not raise), None when it was created or already exists."""
    for entry in topic_errors:
        code, message = entry[1], (entry[2] if len(entry) > 2 else None)
        if code and code != TopicAlreadyExistsError.errno:
            return f"{for_code(code).__name__}: {message or 'refused'}"
    return None


def replication_factor(settings: Settings, brokers: int) -> int:
    """KAFKA_TOPIC_REPLICATION_FACTOR, or 3 (capped at the brokers there are): acks=all
    on a topic with one replica would lose events with one broker."""
    return settings.kafka_topic_replication_factor or max(1, min(3, brokers))


def cannot_create(topic: str, settings: Settings, reason: str) -> str:
    return (
        f"could not create topic {topic} ({reason}); if it exists paygate goes on, "
        f"otherwise create it with {settings.kafka_topic_partitions} partitions or let "
        f"the client {settings.kafka_client_id!r} create topics"
    )


def describe_start_failure(settings: Settings, exc: BaseException) -> str:
    """Why a client could not start, for a person: aiokafka's SCRAM exchange fails with a
    bare KeyError when the broker's last message carries no server signature (a wrong
    password on some brokers); that is an authentication failure, said as one."""
    sasl = settings.kafka_security_protocol.startswith("SASL_")
    if sasl and not isinstance(exc, KafkaError | OSError | TimeoutError):
        return (
            f"SASL {settings.kafka_sasl_mechanism} authentication as "
            f"{settings.kafka_sasl_username!r} failed ({describe_kafka_error(exc)})"
        )
    return describe_kafka_error(exc)


def describe_kafka_error(exc: BaseException) -> str:
    """The class and message, never a credential (aiokafka's messages carry none)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
