"""Kafka client construction and topic set-up, shared by the relay, health and `dev`."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from gateway.config import Settings

log = logging.getLogger(__name__)


def create_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
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
    """Create the events topic if it is missing (real clusters may forbid this: then it is a
    warning, and the relay reports publish failures until an operator creates it)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=f"{settings.kafka_client_id}-admin",
        request_timeout_ms=int(timeout * 1000),
    )
    try:
        await asyncio.wait_for(admin.start(), timeout)
        try:
            if settings.kafka_topic in await admin.list_topics():
                return
            await admin.create_topics(
                [NewTopic(settings.kafka_topic, settings.kafka_topic_partitions, 1)]
            )
            log.info("created topic %s", settings.kafka_topic)
        except TopicAlreadyExistsError:
            pass
        except KafkaError as exc:
            log.warning("could not create topic %s: %r", settings.kafka_topic, exc)
    finally:
        await admin.close()
