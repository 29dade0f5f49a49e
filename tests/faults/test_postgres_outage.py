"""Scenario 2: Postgres stopped for a few seconds under load.

During the outage the gateway must answer 503 with Retry-After, promptly: no request
may hang past WEBHOOK_TIMEOUT_MS (plus slack for the client and the loop). A bound on
a hang is a correctness property here: a provider whose request hangs times out and
cannot tell what happened. After the outage, full service; the provider's retries of
the 503s are recorded exactly once.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.checker import check_database
from tests.faults.conftest import Faults
from tests.faults.harness import CLIENT_TIMEOUT, summarize

pytestmark = pytest.mark.faults

WEBHOOK_TIMEOUT_MS = 2000
SLACK_SECONDS = 2.0


async def test_postgres_outage_gives_prompt_503s_then_full_service(faults: Faults) -> None:
    gw = await faults.gateway("serve", webhook_timeout_ms=WEBHOOK_TIMEOUT_MS)
    driver = faults.driver(
        gw, rate=250, seconds=9, dup_ratio=0.1, request_timeout=WEBHOOK_TIMEOUT_MS / 1000 + 8
    )
    load = asyncio.create_task(driver.run())
    try:
        await asyncio.sleep(2)
        outage_start = time.monotonic()
        await faults.stack.postgres.stop()
        await asyncio.sleep(3)
    finally:
        await faults.stack.postgres.start()
    outage_end = time.monotonic()
    ledger = await load

    stats = summarize(ledger)
    during = ledger.failures_between(outage_start, outage_end)
    unavailable = [f for f in during if f.status == 503]
    assert unavailable, f"no 503 during the outage: {stats}"
    assert all(f.retry_after for f in ledger.failures if f.status == 503), "503 without Retry-After"
    assert set(ledger.statuses) <= {200, 201, 503}, f"unexpected answers: {stats}"
    assert ledger.statuses[CLIENT_TIMEOUT] == 0
    bound = WEBHOOK_TIMEOUT_MS / 1000 + SLACK_SECONDS
    assert ledger.max_seconds <= bound, f"a request hung {ledger.max_seconds:.2f}s > {bound}s"

    # The provider's retries of the 503s were acknowledged (the checker proves: once).
    assert len(ledger.retried & ledger.acked.keys()) > 100, stats

    # Full service after: every delivery was finally acknowledged, and fresh ones go straight in.
    assert not ledger.unacked - ledger.acked.keys(), f"never acknowledged: {stats}"
    after = faults.driver(gw, rate=200, seconds=1, dup_ratio=0, drain=0)
    after_ledger = await after.run()
    assert set(after_ledger.statuses) == {201}, summarize(after_ledger)

    verdict = await check_database(faults.stack.database_url, ledger, outbox_intact=True)
    assert verdict.ok, f"{verdict}\n{stats}"
