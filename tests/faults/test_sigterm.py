"""Scenario 6: SIGTERM under load.

The process (`paygate run`: server, writer and outbox relay) stops listening, finishes
and answers what it accepted, commits it, and exits within SHUTDOWN_TIMEOUT_SECONDS.
Whatever it acknowledged before dying is stored with the acknowledged id; after a
restart the provider's retries complete, and every payment reaches the topic.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import wait_for
from tests.faults.checker import check_database, check_topic, recorded_payments
from tests.faults.conftest import RELAY, Faults
from tests.faults.harness import CONNECTION_ERROR, Ledger, summarize

pytestmark = pytest.mark.faults

SHUTDOWN_TIMEOUT = 3.0
EXIT_SLACK = 3.0


async def _refuses_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def test_sigterm_under_load_answers_what_it_accepted_and_exits_in_time(
    faults: Faults,
) -> None:
    topic = faults.new_topic()
    gw = await faults.gateway(
        "run", topic=topic, shutdown_timeout_seconds=SHUTDOWN_TIMEOUT, **RELAY
    )
    driver = faults.driver(gw, rate=300, seconds=8, dup_ratio=0.1)
    load = asyncio.create_task(driver.run())
    await asyncio.sleep(2.5)

    signalled = time.monotonic()
    gw.terminate()
    await wait_for(lambda: _refuses_connections(gw.port), timeout=SHUTDOWN_TIMEOUT + EXIT_SLACK)
    code = await gw.wait_exit(SHUTDOWN_TIMEOUT + EXIT_SLACK)
    took = time.monotonic() - signalled
    assert code == 0, f"exit code {code} after {took:.1f}s:\n{gw.log_tail()}"

    # Everything acknowledged before the process went away is committed, as acknowledged.
    before = Ledger(
        acked=dict(driver.ledger.acked), ack_conflicts=list(driver.ledger.ack_conflicts)
    )
    verdict = await check_database(faults.stack.database_url, before)
    assert verdict.ok, str(verdict)
    assert verdict.acknowledged > 300

    await gw.start()
    ledger = await load
    stats = summarize(ledger)
    assert ledger.statuses[CONNECTION_ERROR] > 0, f"the restart gap was not felt: {stats}"
    assert set(ledger.statuses) <= {200, 201, 503, CONNECTION_ERROR}, f"unexpected: {stats}"
    assert not ledger.unacked - ledger.acked.keys(), f"never acknowledged: {stats}"
    verdict = await check_database(faults.stack.database_url, ledger)
    assert verdict.ok, f"{verdict}\n{stats}"

    await wait_for(faults.outbox_empty, timeout=30, interval=0.2)
    recorded = await recorded_payments(faults.stack.database_url)
    events = await check_topic(faults.stack.kafka_bootstrap, topic, recorded, timeout=30)
    assert events.ok, str(events)
