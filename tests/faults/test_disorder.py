"""The disorder test (issue 33): twice 200 payment histories from a fixed seed, every
event delivered shuffled (once spread over the run, once clustered by payment), a
quarter of them twice, by 24 concurrent clients to two gateway processes sharing the
database; the final states checked against the README's lifecycle rules
(tests/faults/disorder.py). `python -m bench.disorder` runs it longer."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.conftest import TEST_SECRET
from tests.faults.conftest import Faults
from tests.faults.disorder import Event, check, deliveries, final_state, generate, send_all

SEED = 33
REFERENCES = 200
CLIENTS = 24

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def _at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_the_rules_as_the_readme_states_them() -> None:
    create = Event("R", "pending", _at(0), full=True)
    succeeded = Event("R", "succeeded", _at(5), full=False)
    refunded = Event("R", "refunded", _at(9), full=False)
    assert final_state([create, succeeded, refunded]) == "refunded"
    # A refund before the success it follows: the success is then stale.
    assert final_state([create, refunded, succeeded]) == "refunded"
    # Before the payment: kept, and applied oldest first once it is recorded.
    assert final_state([refunded, succeeded, create]) == "refunded"
    # Final states never regress; pending after success is a regression.
    failed = Event("R", "failed", _at(3), full=False)
    assert final_state([create, failed, succeeded]) == "failed"
    late_pending = Event("R", "pending", _at(20), full=False)
    assert final_state([create, succeeded, late_pending]) == "succeeded"
    assert final_state([succeeded]) is None  # only a full body records a payment


def test_histories_are_fixed_by_the_seed_and_of_the_promised_shape() -> None:
    # One clock reading for both: two calls astride a second's edge differed (seen once).
    now = datetime.now(UTC)
    a, b = generate(SEED, REFERENCES, "P", now=now), generate(SEED, REFERENCES, "P", now=now)
    assert [(h.events, h.expected) for h in a] == [(h.events, h.expected) for h in b]
    assert all(2 <= len(h.events) <= 6 for h in a)
    assert {h.expected for h in a} == {"succeeded", "failed", "refunded", "reversed"}
    sent = deliveries(a, SEED)
    events = sum(len(h.events) for h in a)
    assert events < len(sent) < events * 1.4  # about a quarter sent twice


@pytest.mark.faults
async def test_disorder_on_two_processes_ends_every_payment_where_the_rules_say(
    faults: Faults, db: asyncpg.Pool
) -> None:
    topic = faults.new_topic()
    a, b = await asyncio.gather(
        faults.gateway("serve", topic=topic), faults.gateway("serve", topic=topic)
    )
    urls = [a.url, b.url]
    # Spread: each payment's deliveries anywhere in the run. Clustered: one payment's
    # deliveries at the same moment (the races between a payment and its updates).
    for prefix, seed, clustered in (("DIS", SEED, False), ("DISC", SEED + 1, True)):
        histories = generate(seed, REFERENCES, prefix)
        todo = deliveries(histories, seed, clustered=clustered)
        tally = await send_all(
            urls, TEST_SECRET, todo, clients=CLIENTS, deadline=time.monotonic() + 120
        )
        summary = f"{prefix}: answers={dict(tally.answers)} outcomes={dict(tally.outcomes)}"
        assert not tally.refused, f"{tally.refused[:3]} {summary}"
        assert not tally.unacknowledged, summary
        verdict = await check(faults.stack.database_url, histories, prefix)
        assert verdict.ok, f"{verdict}\n{summary}"

    # The checker can fail: a payment moved behind the rules' back is caught.
    moved = histories[0].reference
    await db.execute(
        "UPDATE payment_service.payments SET status = 'pending' WHERE reference_number = $1",
        moved,
    )
    caught = await check(faults.stack.database_url, histories, prefix)
    assert [ref for ref, _, _ in caught.wrong_final] == [moved]
    assert caught.broken_chain == [moved]
