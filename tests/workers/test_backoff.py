"""Backoff is a pure function of the attempt number: exponential ceiling, full jitter, cap."""

from __future__ import annotations

import random

import pytest

from workers.backoff import backoff_ceiling, backoff_delay


def test_ceiling_doubles_from_base_per_attempt() -> None:
    assert [backoff_ceiling(n, 0.5, 1000) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]


def test_ceiling_is_capped() -> None:
    assert backoff_ceiling(30, 0.5, 300.0) == 300.0


def test_huge_attempt_numbers_do_not_overflow() -> None:
    assert backoff_ceiling(10_000, 0.5, 60.0) == 60.0


def test_full_jitter_spans_zero_to_ceiling() -> None:
    assert backoff_delay(3, 1.0, 100.0, rand=lambda: 0.0) == 0.0
    assert backoff_delay(3, 1.0, 100.0, rand=lambda: 0.5) == 2.0
    assert backoff_delay(3, 1.0, 100.0, rand=lambda: 0.999) == pytest.approx(3.996)


def test_delay_stays_within_bounds_for_random_draws() -> None:
    rng = random.Random(4)
    for attempt in range(1, 40):
        delay = backoff_delay(attempt, 0.25, 30.0, rand=rng.random)
        assert 0.0 <= delay <= min(30.0, 0.25 * 2 ** (attempt - 1))


def test_jitter_spreads_rows_that_failed_together() -> None:
    rng = random.Random(7)
    delays = {round(backoff_delay(5, 1.0, 100.0, rand=rng.random), 6) for _ in range(50)}
    assert len(delays) > 40


def test_a_misbehaving_random_source_cannot_exceed_the_ceiling() -> None:
    assert backoff_delay(2, 1.0, 10.0, rand=lambda: 5.0) == 2.0
    assert backoff_delay(2, 1.0, 10.0, rand=lambda: -1.0) == 0.0


@pytest.mark.parametrize("attempt", [0, -3])
def test_attempts_are_one_based(attempt: int) -> None:
    with pytest.raises(ValueError):
        backoff_delay(attempt, 1.0, 10.0)
