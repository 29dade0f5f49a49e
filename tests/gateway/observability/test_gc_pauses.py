"""paygate_gc_pause_seconds: every pass of the cyclic collector is timed, by generation."""

from __future__ import annotations

import gc

from prometheus_client import REGISTRY

from gateway.observability.gc_pauses import _on_collection, observe_gc_pauses


def _count(generation: str) -> float:
    value = REGISTRY.get_sample_value("paygate_gc_pause_seconds_count", {"generation": generation})
    return value or 0.0


def test_every_collection_is_timed_by_generation() -> None:
    observe_gc_pauses()
    observe_gc_pauses()  # a second call adds no second callback
    try:
        assert gc.callbacks.count(_on_collection) == 1
        full, young = _count("2"), _count("0")
        gc.collect()
        gc.collect(0)
        assert _count("2") == full + 1
        assert _count("0") >= young + 1  # young passes may also run on their own
    finally:
        gc.callbacks.remove(_on_collection)
