"""Pure pieces of deduplication and ids: cache entries, the Redis circuit breaker, uuid7."""

from __future__ import annotations

import gc
import os
import uuid
from decimal import Decimal

import orjson

from gateway.clients.redis import CircuitBreaker
from gateway.config import Settings
from gateway.domain.ids import uuid7
from gateway.ingest.dedup import Deduplicator, Known
from tests.oracles import payment_recorded


def test_known_round_trips_and_garbage_is_a_miss() -> None:
    k = Known("01a2-id", "abc123", "pending")
    assert Known.decode(k.encode()) == k
    for junk in (None, b"", b"no-separators", b"a|b", "é|x|y|z".encode()):
        assert Known.decode(junk) is None


def test_breaker_opens_after_threshold_and_half_opens_after_reset() -> None:
    b = CircuitBreaker(threshold=3, reset_seconds=5)
    for _ in range(2):
        b.failure(now=100.0)
    assert b.allow(now=100.0)
    b.failure(now=100.0)
    assert not b.allow(now=101.0)
    assert b.allow(now=105.0)
    b.success()
    assert b.allow(now=105.0) and not b.is_open


def test_memory_layer_is_bounded_lru() -> None:
    d = Deduplicator(Settings.from_env({}, memory_cache_max_size=2), None)
    d.remember([("a", Known("1", "h", "succeeded")), ("b", Known("2", "h", "succeeded"))])
    assert d.lookup_local("a") is not None  # touch a: b becomes least recent
    d.remember([("c", Known("3", "h", "succeeded"))])
    assert d.lookup_local("b") is None
    assert d.lookup_local("a") is not None and d.lookup_local("c") is not None


def test_memory_layer_answers_what_was_remembered_and_holds_no_tracked_objects() -> None:
    d = Deduplicator(Settings.from_env({}), None)
    d.remember([("a", Known("1", "h", "succeeded"))])
    assert d.lookup_local("a") == Known("1", "h", "succeeded")
    # A collector-tracked object per cached payment made every young-generation pass
    # scan the whole cache: entries are kept packed.
    assert d.l1 is not None and not any(gc.is_tracked(v) for v in d.l1.values())


def test_uuid7_is_version_7_and_time_ordered() -> None:
    ids = [uuid7() for _ in range(5000)]  # several refills of the random buffer
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in ids)
    stamps = [u.int >> 80 for u in ids]
    assert stamps == sorted(stamps)
    assert len({u.int & ((1 << 74) - 1) for u in ids}) == 5000  # random parts all differ


def test_uuid7_random_bits_differ_between_a_parent_and_its_forked_child() -> None:
    uuid7()  # the parent now holds a buffer of random bytes
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id's random bits, then leave at once
        os.write(write, (uuid7().int & ((1 << 74) - 1)).to_bytes(10, "big"))
        os._exit(0)
    os.close(write)
    child = int.from_bytes(os.read(read, 10), "big")
    os.close(read)
    os.waitpid(pid, 0)
    assert child != uuid7().int & ((1 << 74) - 1)


def test_recorded_event_carries_money_as_a_string() -> None:
    from datetime import datetime

    event = payment_recorded(
        payment_id=uuid7(), reference_number="R1", loan_account_number="L", cif="C",
        amount=Decimal("10.5"), payment_date=datetime(2026, 11, 1), payment_channel=None,
        source="webhook", metadata=None, status="succeeded",
    )  # fmt: skip
    body = orjson.loads(event.payload)
    assert body["payment"]["amount"] == "10.50"
    assert body["payment"]["payment_date"] == "2026-11-01T00:00:00Z"
    assert body["event_id"] == str(event.event_id)
    assert event.key == "R1"
