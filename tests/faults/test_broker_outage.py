"""Scenario 4: the broker stopped (killed) under load.

Ingestion does not depend on Kafka (the outbox in Postgres is the durable record):
every request is still acknowledged. When the broker returns, the relay delivers every
event it could not publish. The embedded broker keeps its log in memory, so a restart
loses what it held: the topic is re-created and the check covers the payments first
sent after the broker went down (their events cannot have reached the old broker), and
every event read must name a recorded payment with its id.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import wait_for
from tests.faults.checker import check_database, check_topic, recorded_payments
from tests.faults.conftest import RELAY, Faults
from tests.faults.harness import summarize

pytestmark = pytest.mark.faults


async def test_broker_outage_leaves_ingestion_alone_and_events_follow(faults: Faults) -> None:
    topic = faults.new_topic()
    gw = await faults.gateway("run", topic=topic, **RELAY)
    driver = faults.driver(gw, rate=250, seconds=8, dup_ratio=0.1)
    load = asyncio.create_task(driver.run())
    try:
        await asyncio.sleep(1.5)
        faults.stack.kafka.kill()  # a graceful stop drains clients for seconds first
        stopped = time.monotonic()
        await asyncio.sleep(3)
    finally:
        await faults.stack.kafka.start()
        await faults.create_topic(topic)
    ledger = await load

    stats = summarize(ledger)
    assert set(ledger.statuses) <= {200, 201}, f"the broker outage reached the client: {stats}"
    assert not ledger.unacked
    dsn = faults.stack.database_url
    verdict = await check_database(dsn, ledger)
    assert verdict.ok, f"{verdict}\n{stats}"

    await wait_for(lambda: faults.outbox_empty(), timeout=30, interval=0.2)
    recorded = await recorded_payments(dsn)
    after_stop = [ref for ref in recorded if ledger.first_sent.get(ref, 0.0) >= stopped]
    assert len(after_stop) > 500, "too few payments recorded while the broker was away"
    events = await check_topic(
        faults.stack.kafka_bootstrap, topic, recorded, must_see=after_stop, timeout=30
    )
    assert events.ok, str(events)
