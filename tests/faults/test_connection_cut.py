"""Scenario 7: the gateway's Postgres connections cut mid-commit, again and again.

A backend terminated while a batch commits leaves the outcome ambiguous to the
gateway; it must answer 503 (not acknowledge) unless it knows the commit happened,
and the provider's retry must then find the committed payment (a duplicate with the
same id) rather than record it a second time.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.faults.checker import check_database
from tests.faults.conftest import Faults
from tests.faults.harness import summarize

pytestmark = pytest.mark.faults

TERMINATE = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE application_name = 'paygate' AND pid <> pg_backend_pid()
"""


async def test_connections_cut_mid_commit_never_double_or_lose(faults: Faults) -> None:
    gw = await faults.gateway("serve")
    driver = faults.driver(gw, rate=300, seconds=8, dup_ratio=0.1)
    load = asyncio.create_task(driver.run())
    conn = await asyncpg.connect(
        faults.stack.database_url, server_settings={"application_name": "fault-test"}
    )
    terminated = 0
    try:
        while not load.done() and driver.ledger.finished == 0:
            terminated += await conn.fetchval(TERMINATE)
            await asyncio.sleep(0.25)
    finally:
        await conn.close()
    ledger = await load

    stats = summarize(ledger)
    assert terminated > 10, f"only {terminated} backends were cut"
    assert set(ledger.statuses) <= {200, 201, 503}, f"unexpected answers: {stats}"
    assert not ledger.unacked - ledger.acked.keys(), f"never acknowledged: {stats}"
    verdict = await check_database(faults.stack.database_url, ledger, outbox_intact=True)
    assert verdict.ok, f"{verdict}\n{stats}"
