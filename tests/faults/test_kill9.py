"""Scenario 1: `kill -9` of the gateway under load, restart, carry on.

Whatever was in memory (queued writes, caches) is gone; the provider sees broken
connections and retries. Nothing it saw acknowledged may be missing, nothing may be
half-written, and with no relay running every payment keeps exactly one outbox event.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.faults.checker import check_database
from tests.faults.conftest import Faults
from tests.faults.harness import CONNECTION_ERROR, summarize

pytestmark = pytest.mark.faults


async def test_kill9_under_load_loses_nothing_acknowledged(faults: Faults) -> None:
    gw = await faults.gateway("serve")
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
    verdict = await check_database(faults.stack.database_url, ledger, outbox_intact=True)
    assert verdict.ok, f"{verdict}\n{stats}"
    assert verdict.acknowledged > 1000
