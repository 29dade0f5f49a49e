"""Scenario 1: `kill -9` of the gateway under load, restart, carry on.

Whatever was in memory (queued writes, caches, a relay round) is gone; the provider
sees broken connections and retries. Nothing it saw acknowledged may be missing,
nothing may be half-written, and every recorded payment still reaches the topic (the
relay runs in the killed process, so a round cut short must be redone, not lost).
"""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import wait_for
from tests.faults.checker import check_database, check_topic, recorded_payments
from tests.faults.conftest import RELAY, Faults
from tests.faults.harness import CONNECTION_ERROR, summarize

pytestmark = pytest.mark.faults


async def test_kill9_under_load_loses_nothing_acknowledged(faults: Faults) -> None:
    topic = faults.new_topic()
    gw = await faults.gateway("run", topic=topic, **RELAY)
    driver = faults.driver(gw, rate=300, seconds=8, dup_ratio=0.1)
    load = asyncio.create_task(driver.run())

    for _ in range(2):
        await asyncio.sleep(2.5)
        gw.kill()
        await gw.start()
    ledger = await load

    stats = summarize(ledger)
    assert ledger.statuses[CONNECTION_ERROR] > 0, f"the kills were not felt: {stats}"
    assert gw.starts == 3
    assert not ledger.unacked - ledger.acked.keys(), f"deliveries never acknowledged: {stats}"
    dsn = faults.stack.database_url
    verdict = await check_database(dsn, ledger)
    assert verdict.ok, f"{verdict}\n{stats}"
    assert verdict.acknowledged > 1000

    await wait_for(faults.outbox_empty, timeout=30, interval=0.2)
    recorded = await recorded_payments(dsn)
    events = await check_topic(faults.stack.kafka_bootstrap, topic, recorded, timeout=30)
    assert events.ok, str(events)
