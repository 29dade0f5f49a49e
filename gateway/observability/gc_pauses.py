"""`paygate_gc_pause_seconds`: how long each pass of CPython's cyclic collector held the
process. Every request in flight waits out a pass, so a pass of tens of milliseconds is
a latency tail the request metrics show without saying why; this says why."""

from __future__ import annotations

import gc
import time
from typing import Any

_started = 0.0


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    global _started
    if phase == "start":
        _started = time.perf_counter()
        return
    from gateway.observability import metrics

    metrics.gc_pause.labels(str(info["generation"])).observe(time.perf_counter() - _started)


def observe_gc_pauses() -> None:
    """Time every collection from now on (once per process; idempotent)."""
    if _on_collection not in gc.callbacks:
        gc.callbacks.append(_on_collection)
