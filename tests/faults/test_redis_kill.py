"""Scenario 3: Redis killed under load.

Redis is only a hint (L2 dedup, delivery replay cache): losing it may cost speed,
never an error response and never a second row for a duplicate.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.faults.checker import check_database
from tests.faults.conftest import Faults
from tests.faults.harness import summarize

pytestmark = pytest.mark.faults


async def test_redis_killed_under_load_costs_no_errors_and_no_doubles(faults: Faults) -> None:
    gw = await faults.gateway("serve")
    driver = faults.driver(gw, rate=300, seconds=8, dup_ratio=0.3)
    load = asyncio.create_task(driver.run())
    try:
        await asyncio.sleep(2)
        faults.stack.redis.kill()
        await asyncio.sleep(3)
    finally:
        await faults.stack.redis.start()
    ledger = await load

    stats = summarize(ledger)
    assert set(ledger.statuses) <= {200, 201}, f"Redis loss caused error responses: {stats}"
    assert ledger.statuses[200] > 0, "no duplicates were exercised"
    assert not ledger.unacked
    verdict = await check_database(faults.stack.database_url, ledger, outbox_intact=True)
    assert verdict.ok, f"{verdict}\n{stats}"
