"""Token buckets driven by a fake clock."""

from __future__ import annotations

import pytest

from gateway.security.ratelimit import RateLimiter, TokenBucket, retry_after_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refusal_with_the_wait_until_a_token() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    clock.now += 0.25
    assert bucket.take() == pytest.approx(0.25)
    clock.now += 0.25
    assert bucket.take() == 0.0


def test_refill_is_capped_at_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10.0, burst=2, clock=clock)
    clock.now += 3600
    assert [bucket.take() for _ in range(3)][:2] == [0.0, 0.0]
    assert bucket.take() > 0


def test_a_clock_going_backwards_adds_nothing() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=1.0, burst=1, clock=clock)
    assert bucket.take() == 0.0
    clock.now -= 100
    assert bucket.take() > 0


@pytest.mark.parametrize("wait, expected", [(0.001, 1), (1.0, 1), (1.2, 2), (99.5, 100)])
def test_retry_after_is_whole_seconds_at_least_one(wait: float, expected: int) -> None:
    assert retry_after_seconds(wait) == expected


def test_limiter_is_per_channel_and_follows_a_reload() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert limiter.take("a", 1.0, 1) == 0.0
    assert limiter.take("a", 1.0, 1) > 0
    assert limiter.take("b", 1.0, 1) == 0.0  # other channel, own bucket
    assert limiter.take("a", 5.0, 5) == 0.0  # new rate/burst: new bucket
    assert limiter.take("c", None, None) == 0.0  # no limit configured


def test_burst_defaults_to_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert [limiter.take("a", 2.5, None) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", 2.5, None) > 0


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 1)
    with pytest.raises(ValueError):
        TokenBucket(1, 0)
