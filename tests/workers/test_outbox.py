"""The outbox relay against the real stack: payments posted through the app come out of
the embedded Kafka broker exactly as a downstream consumer would read them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NodeNotReadyError,
)
from aiokafka.structs import ConsumerRecord
from prometheus_client import REGISTRY

from gateway import appkeys
from gateway.clients.kafka import ensure_topic
from gateway.config import Settings
from gateway.db.dead_letters import list_dead_letters, replay
from gateway.db.event_log import ROUND_SQL, SESSION_SQL, append_event_sql
from tests import stack as stack_module
from tests.conftest import make_settings, wait_for
from tests.webhooks import payment_doc, post_webhook
from workers.outbox import RETRY_WINDOW, OutboxRelay, RoundResult, describe_error, is_transient

Record = ConsumerRecord[bytes, bytes]


def relay_settings(stack: stack_module.TestStack, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "kafka_request_timeout_ms": 1500,
        "outbox_poll_interval_ms": 20,
        "outbox_backoff_base_ms": 5,
        "outbox_backoff_max_seconds": 0.2,
    }
    base.update(overrides)
    return make_settings(stack, **base)


@pytest.fixture
async def broker(stack: stack_module.TestStack) -> AsyncIterator[stack_module.TestStack]:
    """For tests that stop the broker: it is running again afterwards, whatever happened."""
    try:
        yield stack
    finally:
        if "kafka" in stack.servers and not stack.kafka.running:
            await stack.kafka.start()


async def start_relay(
    relays: list[OutboxRelay], pool: asyncpg.Pool, settings: Settings, **kwargs: Any
) -> OutboxRelay:
    relay = OutboxRelay(pool, settings, kwargs.pop("wakeup", None), **kwargs)
    relays.append(relay)
    await relay.start()
    return relay


async def read_topic(settings: Settings, expected: int) -> list[Record]:
    """Everything on the test's topic from the earliest offset: waits for `expected`
    records, then polls once more so a surplus (a duplicate) would show too. (The
    embedded broker's end offsets are not reliable enough to stop on.)"""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        await consumer.topics()  # fresh metadata
        parts = consumer.partitions_for_topic(settings.kafka_topic) or set()
        tps = [TopicPartition(settings.kafka_topic, p) for p in sorted(parts)]
        assert tps, "topic missing"
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Record] = []

        async def fetched(enough: int) -> bool:
            for batch in (await consumer.getmany(*tps, timeout_ms=100)).values():
                records.extend(batch)
            return len(records) >= enough

        await wait_for(lambda: fetched(expected), timeout=20)
        await fetched(len(records) + 1)
        return records
    finally:
        await consumer.stop()


def headers(record: Record) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


async def pending(pool: asyncpg.Pool) -> int:
    """Events not yet published: in the log past their lane's cursor, or waiting in the
    outbox (dead letters excluded)."""
    return int(await pool.fetchval("SELECT pending FROM payment_service.events_pending(1000000)"))


async def insert_event(
    pool: asyncpg.Pool | asyncpg.Connection,
    settings: Settings,
    key: str,
    body: dict[str, Any] | bytes,
) -> uuid.UUID:
    """An event with a stored payload appended to the log, as a status change is."""
    payload = body if isinstance(body, bytes) else orjson.dumps(body)
    event_id = uuid.uuid4()
    await pool.execute(
        append_event_sql(event_id="$1", event_type="$2", topic="$3", key="$4", payload="$5"),
        event_id, "payment.status_changed", settings.kafka_topic, key, payload,
    )  # fmt: skip
    return event_id


async def insert_retry(
    pool: asyncpg.Pool, settings: Settings, key: str, body: dict[str, Any] | bytes, **extra: Any
) -> int:
    """An event waiting in the outbox (a retry, or with dead_lettered_at a dead letter)."""
    payload = body if isinstance(body, bytes) else orjson.dumps(body)
    cols = ["event_id", "event_type", "topic", "key", "payload", *extra]
    values = [uuid.uuid4(), "payment.status_changed", settings.kafka_topic, key, payload]
    values += list(extra.values())
    marks = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
    return int(
        await pool.fetchval(
            f"INSERT INTO payment_service.outbox ({', '.join(cols)}) VALUES ({marks}) RETURNING id",
            *values,
        )
    )


def counter(result: str) -> float:
    return REGISTRY.get_sample_value("paygate_kafka_publish_total", {"result": result}) or 0.0


async def test_every_posted_payment_becomes_exactly_one_event(
    make_client: Callable[..., Awaitable[Any]],
    db: asyncpg.Pool,
    stack: stack_module.TestStack,
    relays: list[OutboxRelay],
) -> None:
    settings = relay_settings(stack)
    client = await make_client(settings)
    await start_relay(relays, db, settings, wakeup=client.server.app[appkeys.OUTBOX_WAKE])
    posted: dict[str, tuple[dict[str, Any], str]] = {}
    for i in range(25):
        doc = payment_doc(amount=f"{100 + i}.0{i % 10}")
        status, body, _ = await post_webhook(client, doc)
        assert status == 201
        posted[doc["reference_number"]] = (doc, body["payment_id"])

    await wait_for(lambda: _is_zero(pending(db)), timeout=20)
    records = await read_topic(settings, len(posted))

    assert len(records) == len(posted)
    assert len({headers(r)["event_id"] for r in records}) == len(posted)
    for r in records:
        event = orjson.loads(r.value)
        doc, payment_id = posted[r.key.decode()]
        assert headers(r) == {"event_id": event["event_id"], "event_type": "payment.recorded"}
        assert event["event_type"] == "payment.recorded"
        assert event["payment"]["id"] == payment_id
        assert event["payment"]["reference_number"] == doc["reference_number"]
        assert event["payment"]["amount"] == doc["amount"]
        assert event["payment"]["source"] == "webhook"
    assert await db.fetchval("SELECT count(*) FROM payment_service.outbox") == 0


async def _is_zero(value: Awaitable[int]) -> bool:
    return await value == 0


async def test_broker_outage_never_fails_ingestion_and_the_backlog_drains(
    make_client: Callable[..., Awaitable[Any]],
    db: asyncpg.Pool,
    broker: stack_module.TestStack,
    relays: list[OutboxRelay],
) -> None:
    if "kafka" not in broker.servers:
        pytest.skip("needs the embedded broker to stop and start it")
    settings = relay_settings(broker)
    client = await make_client(settings)
    await start_relay(relays, db, settings, wakeup=client.server.app[appkeys.OUTBOX_WAKE])
    first = payment_doc()
    assert (await post_webhook(client, first))[0] == 201
    await wait_for(lambda: _is_zero(pending(db)), timeout=20)  # the producer is connected

    errors_before = counter("error")
    await broker.kafka.stop()
    refs = {first["reference_number"]}
    for _ in range(12):
        doc = payment_doc()
        status, _, _ = await post_webhook(client, doc)
        assert status == 201
        refs.add(doc["reference_number"])
    assert await pending(db) == 12
    await wait_for(lambda: _positive(counter("error") - errors_before), timeout=20)
    # An outage is not the events' fault: none of them is charged an attempt (none went to
    # the outbox of retries).
    assert await db.fetchval("SELECT count(*) FROM payment_service.outbox") == 0

    # Same port, and no topic: this broker keeps its log in memory only. The relay must
    # re-create the topic itself before it writes again.
    await broker.kafka.start()
    await wait_for(lambda: _is_zero(pending(db)), timeout=30)
    records = await read_topic(settings, 12)

    assert {r.key.decode() for r in records} == refs - {first["reference_number"]}
    # At least once: what was in flight when the broker went away may be redelivered
    # (same event id), never lost.
    assert len({headers(r)["event_id"] for r in records}) == 12


async def _positive(value: float) -> bool:
    return value > 0


async def _true(value: bool) -> bool:
    return value


async def test_relay_started_while_the_broker_is_down_starts_its_producer_later(
    db: asyncpg.Pool, broker: stack_module.TestStack, relays: list[OutboxRelay]
) -> None:
    if "kafka" not in broker.servers:
        pytest.skip("needs the embedded broker to stop and start it")
    settings = relay_settings(broker)
    await broker.kafka.stop()
    relay = await start_relay(relays, db, settings)
    await insert_event(db, settings, "K-LATE", {"n": 1})
    await wait_for(lambda: _true(relay.kafka_unavailable), timeout=20)
    assert await pending(db) == 1

    await broker.kafka.start()  # without the topic: the relay re-creates it
    await wait_for(lambda: _is_zero(pending(db)), timeout=30)
    assert [r.key for r in await read_topic(settings, 1)] == [b"K-LATE"]


async def test_poison_event_is_dead_lettered_the_rest_flow_and_replay_publishes_it(
    make_client: Callable[..., Awaitable[Any]],
    db: asyncpg.Pool,
    stack: stack_module.TestStack,
    relays: list[OutboxRelay],
) -> None:
    settings = relay_settings(stack, outbox_max_attempts=3)
    client = await make_client(settings)

    def small_limit(s: Settings) -> AIOKafkaProducer:
        # Stands in for a broker whose size limit the poison event exceeds.
        return AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap_servers, acks="all", max_request_size=2048
        )

    poison = await insert_event(db, settings, "POISON-1", {"blob": "x" * 4096})
    dead_before = counter("dead_letter")
    relay = await start_relay(
        relays, db, settings, wakeup=client.server.app[appkeys.OUTBOX_WAKE],
        producer_factory=small_limit,
    )  # fmt: skip
    refs = set()
    for _ in range(5):
        doc = payment_doc()
        assert (await post_webhook(client, doc))[0] == 201
        refs.add(doc["reference_number"])

    await wait_for(lambda: _is_zero(pending(db)), timeout=20)
    [dead] = await list_dead_letters(db)
    assert dead["event_id"] == str(poison) and dead["attempts"] == 3
    assert dead["last_error"].startswith("MessageSizeTooLargeError")
    assert counter("dead_letter") == dead_before + 1
    assert {r.key.decode() for r in await read_topic(settings, len(refs))} == refs

    await relay.stop()  # the operator raises the limit: a relay with the default producer
    await start_relay(relays, db, settings)
    assert len(await replay(db, [dead["id"]], all_=False, actor="test:operator")) == 1
    await wait_for(lambda: _is_zero(db.fetchval("SELECT count(*) FROM payment_service.outbox")))
    replayed = [r for r in await read_topic(settings, len(refs) + 1) if r.key == b"POISON-1"]
    assert len(replayed) == 1
    assert orjson.loads(replayed[0].value) == {"blob": "x" * 4096}


async def test_a_rescheduled_event_holds_back_the_later_events_of_its_key(
    db: asyncpg.Pool, stack: stack_module.TestStack
) -> None:
    settings = relay_settings(stack)
    await ensure_topic(settings)
    relay = OutboxRelay(db, settings)
    try:
        first = await insert_retry(
            db, settings, "K-1", {"seq": 1}, attempts=1, next_attempt_at=_in_an_hour()
        )
        await insert_event(db, settings, "K-1", {"seq": 2})
        await insert_event(db, settings, "K-2", {"seq": 1})
        await relay.burst()
        assert [r.key for r in await read_topic(settings, 1)] == [b"K-2"]
        assert await pending(db) == 2

        await db.execute(
            "UPDATE payment_service.outbox SET next_attempt_at = now() WHERE id = $1", first
        )
        await relay.burst()
        by_key = [
            orjson.loads(r.value)["seq"] for r in await read_topic(settings, 3) if r.key == b"K-1"
        ]
        assert by_key == [1, 2]
    finally:
        await relay.stop()


async def test_a_dead_letter_does_not_block_its_key(
    db: asyncpg.Pool, stack: stack_module.TestStack
) -> None:
    settings = relay_settings(stack)
    await ensure_topic(settings)
    relay = OutboxRelay(db, settings)
    try:
        await insert_retry(db, settings, "K-D", {"seq": 1}, dead_lettered_at=_in_an_hour())
        await insert_event(db, settings, "K-D", {"seq": 2})
        await relay.burst()
        assert [orjson.loads(r.value)["seq"] for r in await read_topic(settings, 1)] == [2]
    finally:
        await relay.stop()


def _in_an_hour() -> Any:
    from datetime import UTC, datetime, timedelta

    return datetime.now(UTC) + timedelta(hours=1)


class SlowProducer(AIOKafkaProducer):  # type: ignore[misc]
    """A real producer that takes its time over each send, so a second relay races ahead
    of it: the case where per-key order could break."""

    @classmethod
    def factory(cls, s: Settings) -> AIOKafkaProducer:
        return cls(bootstrap_servers=s.kafka_bootstrap_servers, acks="all")

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.02)
        return await super().send(*args, **kwargs)


async def test_two_relays_publish_each_event_once_in_key_order(
    db: asyncpg.Pool, stack: stack_module.TestStack, relays: list[OutboxRelay]
) -> None:
    settings = relay_settings(stack, kafka_batch_size=7)
    await ensure_topic(settings)
    keys = [f"K-{k:02d}" for k in range(12)]
    for seq in range(6):
        for key in keys:
            await insert_event(db, settings, key, {"key": key, "seq": seq})

    slow = await start_relay(
        relays, db, settings, producer_factory=SlowProducer.factory, lane_check_seconds=0.05
    )
    fast = await start_relay(relays, db, settings, lane_check_seconds=0.05)
    await wait_for(lambda: _is_zero(pending(db)), timeout=30)

    async def shared() -> bool:  # both run, so the lanes end up split between them
        return bool(slow.lanes.held) and bool(fast.lanes.held)

    # Waited for, not assumed: the slow relay can hold every lane until the drain is over
    # (the fast one's first lane check comes after it), which failed a fresh-clone run.
    await wait_for(shared, timeout=30)
    records = await read_topic(settings, len(keys) * 6)

    assert len(records) == len(keys) * 6
    assert len({headers(r)["event_id"] for r in records}) == len(records)
    for key in keys:
        mine = sorted((r for r in records if r.key == key.encode()), key=lambda r: r.offset)
        assert len({r.partition for r in mine}) == 1
        assert [orjson.loads(r.value)["seq"] for r in mine] == list(range(6))


# -- pure: how failures are told apart ---------------------------------------------------


def test_errors_are_described_by_class_and_message_only() -> None:
    text = describe_error(MessageSizeTooLargeError("The message is 5000 bytes" + "x" * 1000))
    assert text.startswith("MessageSizeTooLargeError: ")
    assert text.count("MessageSizeTooLargeError") == 1
    assert len(text) <= 300
    assert describe_error(TimeoutError()) == "TimeoutError"


def test_transient_errors_are_the_broker_s_not_the_row_s() -> None:
    assert is_transient(KafkaConnectionError())
    assert is_transient(KafkaTimeoutError())
    assert is_transient(NodeNotReadyError())
    assert is_transient(TimeoutError())
    assert not is_transient(MessageSizeTooLargeError())
    assert not is_transient(ValueError("bad payload"))


def test_an_outage_is_a_round_where_nothing_went_through_and_all_failures_look_transient() -> None:
    down = RoundResult(failed={1: KafkaConnectionError(), 2: KafkaTimeoutError()})
    assert down.outage
    assert not RoundResult(acked={3: 0.0}, failed={1: KafkaConnectionError()}).outage
    assert not RoundResult(failed={1: KafkaTimeoutError(), 2: MessageSizeTooLargeError()}).outage
    assert not RoundResult().outage


async def _round_plan(db: asyncpg.Pool, batch: int) -> dict[str, Any]:
    """EXPLAIN ANALYZE of one round's read, every lane at its stored cursor, in the relay's
    session settings."""
    async with db.acquire() as conn:
        await conn.execute(SESSION_SQL)
        try:
            cursors = await conn.fetch(
                "SELECT lane, done FROM payment_service.event_lane_cursors() ORDER BY lane"
            )
            [[plan]] = await conn.fetch(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + ROUND_SQL,
                [c["lane"] for c in cursors], [c["done"] for c in cursors],
                [None] * len(cursors), [0] * len(cursors), batch, batch, RETRY_WINDOW * batch,
                [None] * len(cursors),
            )  # fmt: skip
        finally:
            await conn.execute("RESET ALL")
    top: dict[str, Any] = (orjson.loads(plan) if isinstance(plan, str | bytes) else plan)[0]
    return top["Plan"]


async def _cursors_to_now(db: asyncpg.Pool) -> None:
    await db.execute(
        "INSERT INTO payment_service.event_cursors (lane, done)"
        " SELECT lane, pg_current_snapshot() FROM generate_series(0, 7) lane"
    )


def _blocks(plan: dict[str, Any]) -> int:
    return int(plan["Shared Hit Blocks"] + plan.get("Shared Read Blocks", 0))


async def test_a_round_reads_what_is_new_whatever_lies_behind_or_stays_open(
    db: asyncpg.Pool, stack: stack_module.TestStack
) -> None:
    """A round costs what it reads: 20,000 events already published, 5,000 retries queued
    (a table with no statistics) and a transaction that wrote an event and stays open do
    not make reading the next 100 events dearer. Work is counted in buffers, not time."""
    settings = relay_settings(stack)
    await db.execute(
        f"""INSERT INTO payment_service.event_log (lane, event_type, topic, event_id, key, payload)
        SELECT payment_service.event_lane('K-' || i), 'payment.status_changed',
               '{settings.kafka_topic}', gen_random_uuid(), 'K-' || i, '{{}}'::bytea
        FROM generate_series(1, 20000) i"""
    )
    await db.execute(
        "INSERT INTO payment_service.outbox (event_id, event_type, topic, key, payload,"
        " next_attempt_at) SELECT gen_random_uuid(), 'payment.status_changed', 't',"
        " 'R-' || (i % 2500), '{}'::bytea, now() + interval '1 hour'"
        " FROM generate_series(1, 5000) i"
    )
    stats = "SELECT reltuples FROM pg_class WHERE oid = 'payment_service.event_log_0'::regclass"
    assert await db.fetchval(stats) <= 0  # never analyzed: what the planner is left with
    async with db.acquire() as held:
        await held.execute("BEGIN")
        await insert_event(held, settings, "K-OPEN", {"open": True})  # holds its xid
        await _cursors_to_now(db)  # everything so far published; K-OPEN in progress
        for i in range(100):
            await insert_event(db, settings, f"N-{i}", {"n": i})
        plan = await _round_plan(db, 500)
        await held.execute("COMMIT")
    assert plan["Actual Rows"] == 8 + 100, plan["Actual Rows"]  # one row per lane + events
    # ~400 here (mostly the 100 events); reading the 20,000 behind would be thousands.
    assert _blocks(plan) < 1_500, _blocks(plan)
    # Committed, the open transaction's event is in the next read from the same cursor.
    plan = await _round_plan(db, 500)
    assert plan["Actual Rows"] == 8 + 101


def test_distrusted_acks_become_a_retried_outage_not_deleted_rows() -> None:
    late = RoundResult(acked={1: 0.0, 2: 0.0}, failed={3: KafkaTimeoutError()})
    late.distrust_acks()
    assert late.acked == {}
    assert set(late.failed) == {1, 2, 3}
    assert late.outage  # so no row is charged an attempt
