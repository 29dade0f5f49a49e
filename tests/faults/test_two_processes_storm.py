"""Scenario 5: two gateway processes sharing the database take a storm in which every
payment is delivered many times at once, to both.

Each process has its own L1 cache and writer, so nothing in memory can settle the
race: the reference table must. Exactly one `created` per payment, every
acknowledgement of a payment carries the same id, one row each.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.faults.checker import check_database
from tests.faults.conftest import Faults
from tests.faults.harness import summarize

pytestmark = pytest.mark.faults

REFS = 400
COPIES = 8


async def test_storm_on_two_processes_creates_each_payment_once(faults: Faults) -> None:
    topic = faults.new_topic()
    a, b = await asyncio.gather(
        faults.gateway("serve", topic=topic), faults.gateway("serve", topic=topic)
    )
    driver = faults.driver(a, b, seconds=20, drain=10, connections=64)
    ledger = await driver.storm(REFS, COPIES)

    stats = summarize(ledger)
    assert ledger.deliveries == REFS * COPIES
    assert set(ledger.statuses) <= {200, 201}, f"unexpected answers: {stats}"
    assert len(ledger.acked) == REFS
    created_counts = {ref: ledger.created[ref] for ref in ledger.acked}
    assert set(created_counts.values()) == {1}, {
        ref: n for ref, n in created_counts.items() if n != 1
    }
    verdict = await check_database(faults.stack.database_url, ledger, outbox_intact=True)
    assert verdict.ok, f"{verdict}\n{stats}"
    assert verdict.payments == REFS
