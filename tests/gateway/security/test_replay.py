"""The delivery replay guard: memory first, Redis shared, and open when Redis fails."""

from __future__ import annotations

import asyncio
import uuid

from gateway.config import Settings
from gateway.redis_cache import RedisCache
from gateway.security.replay import KEY_PREFIX, DeliveryReplayGuard
from tests import stack as stack_mod
from tests.conftest import make_settings


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_remembered_delivery_is_seen_until_twice_the_tolerance() -> None:
    clock = Clock()
    guard = DeliveryReplayGuard(lambda channel: 300, clock=clock)
    assert guard.seen_local("generic", "msg_1") is None
    guard.remember("generic", "msg_1", "pay-1")
    assert guard.seen_local("generic", "msg_1") == "pay-1"
    assert guard.seen_local("stripe", "msg_1") is None  # channels are separate
    clock.now += 599
    assert guard.seen_local("generic", "msg_1") == "pay-1"
    clock.now += 2
    assert guard.seen_local("generic", "msg_1") is None


def test_memory_is_bounded() -> None:
    guard = DeliveryReplayGuard(lambda channel: 300, max_entries=2)
    for i in range(3):
        guard.remember("generic", f"msg_{i}", f"pay-{i}")
    assert guard.seen_local("generic", "msg_0") is None
    assert guard.seen_local("generic", "msg_2") == "pay-2"


def test_a_new_tolerance_after_reload_starts_afresh() -> None:
    tolerance = {"generic": 300}
    guard = DeliveryReplayGuard(lambda channel: tolerance[channel])
    guard.remember("generic", "msg_1", "pay-1")
    tolerance["generic"] = 60
    assert guard.ttl("generic") == 120
    assert guard.seen_local("generic", "msg_1") is None


async def test_redis_shares_deliveries_between_instances(stack: stack_mod.TestStack) -> None:
    settings = make_settings(stack)
    first, second = DeliveryReplayGuard(lambda c: 300), DeliveryReplayGuard(lambda c: 300)
    first.redis = second.redis = RedisCache(settings)
    delivery = f"msg_{uuid.uuid4().hex}"
    try:
        assert await second.seen("generic", delivery) is None
        first.remember("generic", delivery, "pay-1")
        await first.close()
        answers = await asyncio.gather(*(second.seen("generic", delivery) for _ in range(5)))
        assert answers == ["pay-1"] * 5
        # SET NX: the first answer stays
        first.remember("generic", delivery, "pay-2")
        await first.close()
        raw = await first.redis.client.get(f"{KEY_PREFIX}generic:{delivery}")
        assert raw == b"pay-1"
        assert 0 < await first.redis.client.ttl(f"{KEY_PREFIX}generic:{delivery}") <= 600
    finally:
        await first.redis.close()


async def test_redis_outage_fails_open(stack: stack_mod.TestStack) -> None:
    dead = Settings.from_env({}, redis_url="redis://127.0.0.1:9/0", redis_timeout_ms=50)
    guard = DeliveryReplayGuard(lambda c: 300)
    guard.redis = RedisCache(dead)
    try:
        assert await guard.seen("generic", "msg_x") is None
        guard.remember("generic", "msg_x", "pay-x")
        await guard.close()
        assert await guard.seen("generic", "msg_x") == "pay-x"  # memory still answers
        assert await guard.seen("generic", "msg_y") is None
    finally:
        await guard.redis.close()
