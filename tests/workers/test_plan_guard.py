"""workers/plan_guard.py: which reads of the relay call for fresh plans (pure)."""

from __future__ import annotations

from workers.plan_guard import DISCARD_INTERVAL_SECONDS, PlanGuard


def test_a_read_slow_for_its_events_drops_the_plans_once_in_an_interval() -> None:
    guard = PlanGuard()
    assert guard.should_discard(0.5, 1000, now=100.0)  # 500 µs an event
    assert not guard.should_discard(0.5, 1000, now=101.0)  # too soon after the last
    assert guard.should_discard(0.5, 1000, now=100.0 + DISCARD_INTERVAL_SECONDS)
    assert guard.discards == 2


def test_sound_reads_keep_their_plans() -> None:
    guard = PlanGuard()
    assert not guard.should_discard(0.03, 0, now=0.0)  # an idle read that was planned
    assert not guard.should_discard(0.2, 20, now=0.0)  # a few events: planning dominates
    assert not guard.should_discard(0.19, 4000, now=0.0)  # 48 µs an event: a sound plan
    assert not guard.should_discard(0.04, 100, now=0.0)  # slow an event, but short
    assert guard.discards == 0
