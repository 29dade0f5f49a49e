"""The checker itself must be able to fail: each kind of damage it looks for, planted
directly in the tables, is reported; and the topic check reports a missing event and an
event for a payment that was never recorded."""

from __future__ import annotations

import uuid

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from gateway.clients.kafka import ensure_topic
from tests.conftest import make_settings
from tests.faults.checker import check_database, check_topic
from tests.faults.harness import Ledger
from tests.stack import TestStack as Stack

pytestmark = pytest.mark.faults


async def _payment(
    pool: asyncpg.Pool, ref: str, pid: str | None = None, *, claim: bool = True
) -> str:
    pid = pid or str(uuid.uuid4())
    await pool.execute(
        "INSERT INTO payment_service.payments (id, reference_number, loan_account_number, cif,"
        " amount, payment_date, source) VALUES ($1, $2, 'LA-1', 'CIF-1', 10, now(), 'webhook')",
        uuid.UUID(pid),
        ref,
    )
    if claim:
        await pool.execute(
            "INSERT INTO payment_service.payment_references"
            " (reference_number, payment_id, payment_date, payload_hash)"
            " VALUES ($1, $2, now(), 'h') ON CONFLICT DO NOTHING",
            ref,
            uuid.UUID(pid),
        )
    return pid


async def test_checker_reports_every_kind_of_damage(db: asyncpg.Pool, stack: Stack) -> None:
    good = await _payment(db, "R-good")
    doubled = await _payment(db, "R-doubled")
    await _payment(db, "R-doubled", claim=False)
    wrong = await _payment(db, "R-wrong")
    await _payment(db, "R-orphan-payment", claim=False)
    await db.execute(
        "INSERT INTO payment_service.payment_references"
        " (reference_number, payment_id, payment_date, payload_hash)"
        " VALUES ('R-orphan-ref', $1, now(), 'h')",
        uuid.uuid4(),
    )
    ledger = Ledger()
    ledger.acked = {
        "R-good": good,
        "R-doubled": doubled,
        "R-wrong": str(uuid.uuid4()),
        "R-lost": str(uuid.uuid4()),
    }
    ledger.ack_conflicts = [("R-good", good, wrong)]

    v = await check_database(stack.database_url, ledger, outbox_intact=True)

    assert not v.ok
    assert v.lost == ["R-lost"]
    assert v.doubled == ["R-doubled"]
    assert [w[0] for w in v.wrong_id] == ["R-wrong"]
    assert v.orphan_payments == ["R-orphan-payment"]
    assert v.orphan_references == ["R-orphan-ref"]
    assert "R-good" in v.missing_outbox  # planted without its outbox event
    assert v.ack_conflicts


async def test_clean_tables_pass(db: asyncpg.Pool, stack: Stack) -> None:
    ledger = Ledger()
    ledger.acked = {"R-1": await _payment(db, "R-1")}
    v = await check_database(stack.database_url, ledger)
    assert v.ok, str(v)


async def test_topic_check_reports_missing_and_unknown_events(stack: Stack) -> None:
    settings = make_settings(stack)
    await ensure_topic(settings)
    recorded = {"R-a": str(uuid.uuid4()), "R-b": str(uuid.uuid4())}
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        for ref, pid in (("R-a", recorded["R-a"]), ("R-ghost", str(uuid.uuid4()))):
            event = {
                "event_type": "payment.recorded",
                "payment": {"id": pid, "reference_number": ref},
            }
            await producer.send_and_wait(
                settings.kafka_topic, orjson.dumps(event), key=ref.encode()
            )
    finally:
        await producer.stop()

    v = await check_topic(stack.kafka_bootstrap, settings.kafka_topic, recorded, timeout=3)

    assert v.missing == ["R-b"]
    assert [u[0] for u in v.unknown] == ["R-ghost"]
