"""The delivery replay guard: per channel, bounded, forgotten after twice the tolerance."""

from __future__ import annotations

import gc

from gateway.security.replay import DeliveryReplayGuard


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_remembered_delivery_is_seen_until_twice_the_tolerance() -> None:
    clock = Clock()
    guard = DeliveryReplayGuard(lambda channel: 300, clock=clock)
    assert guard.seen("generic", "msg_1") is None
    guard.remember("generic", "msg_1", "pay-1")
    assert guard.seen("generic", "msg_1") == "pay-1"
    assert guard.seen("stripe", "msg_1") is None  # channels are separate
    clock.now += 599
    assert guard.seen("generic", "msg_1") == "pay-1"
    clock.now += 2
    assert guard.seen("generic", "msg_1") is None


def test_memory_is_bounded() -> None:
    guard = DeliveryReplayGuard(lambda channel: 300, max_entries=2)
    for i in range(3):
        guard.remember("generic", f"msg_{i}", f"pay-{i}")
    assert guard.seen("generic", "msg_0") is None
    assert guard.seen("generic", "msg_2") == "pay-2"
    assert len(guard._windows["generic"]._answers) == 2  # evicted from both maps


def test_a_new_tolerance_after_reload_applies_from_the_next_delivery() -> None:
    tolerance = {"generic": 300}
    guard = DeliveryReplayGuard(lambda channel: tolerance[channel])
    guard.remember("generic", "msg_1", "pay-1")
    tolerance["generic"] = 60
    assert guard.ttl("generic") == 120
    assert guard.seen("generic", "msg_1") == "pay-1"  # still the payment it recorded
    guard.remember("generic", "msg_2", "pay-2")
    assert guard._windows["generic"].ttl == 120
    assert guard.seen("generic", "msg_2") == "pay-2"


def test_expired_deliveries_leave_memory_as_new_ones_arrive() -> None:
    clock = Clock()
    guard = DeliveryReplayGuard(lambda channel: 5, clock=clock)
    for i in range(100):
        guard.remember("generic", f"old_{i}", "pay")
    clock.now += 11
    for i in range(60):
        guard.remember("generic", f"new_{i}", "pay")
    window = guard._windows["generic"]
    # every old entry dropped, two per write, from both of the window's maps
    assert len(window) == 60 == len(window._answers)
    assert guard.seen("generic", "old_0") is None
    assert guard.seen("generic", "new_59") == "pay"


def test_remembering_again_refreshes_the_entry() -> None:
    clock = Clock()
    guard = DeliveryReplayGuard(lambda channel: 5, clock=clock, max_entries=2)
    guard.remember("generic", "a", "1")
    guard.remember("generic", "b", "2")
    clock.now += 6
    guard.remember("generic", "a", "1")  # moves to the back: b is now the oldest
    guard.remember("generic", "c", "3")
    assert guard.seen("generic", "b") is None
    assert guard.seen("generic", "a") == "1"
    assert guard.seen("generic", "c") == "3"


def test_entries_are_invisible_to_the_cyclic_collector() -> None:
    # One collector-tracked object per delivery made every young-generation pass scan
    # the whole window (tens of milliseconds at thousands of deliveries a second).
    guard = DeliveryReplayGuard(lambda channel: 300)
    guard.remember("generic", "msg_1", "pay-1")
    window = guard._windows["generic"]
    for key, expiry in window._expiries.items():
        assert not gc.is_tracked(expiry) and not gc.is_tracked(window._answers[key])
