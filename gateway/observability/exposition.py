"""What a scrape reads, and the one routine that prepares multiprocess metrics.

With several server processes on one port, prometheus-client's multiprocess mode is on
(PROMETHEUS_MULTIPROC_DIR): each scrape merges every process's files, so any process
answers for all of them. prometheus-client picks its mode when it is first imported,
which is why this module imports it (and `metrics`) only inside functions:
`prepare_multiprocess_dir` must run before that first import.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

# Duplicates recognised before the database never write webhook_events.
_DATABASE_LAYER = "database"


def prepare_multiprocess_dir(path: str | os.PathLike[str]) -> Path:
    """Empty (or create) the multiprocess metrics directory and point prometheus-client at it.

    Call once per host start-up, in the parent, before anything imports prometheus_client:
    files left by an earlier run would otherwise be merged into this run's counters.
    """
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prepare_multiprocess_dir must run before prometheus_client is imported")
    directory = Path(path)
    if directory.exists():
        for entry in directory.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def metrics_registry() -> CollectorRegistry:
    """The registry a scrape reads: every process's files in multiprocess mode (a fresh
    registry each time, as prometheus-client requires), else this process's default one."""
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    from gateway.observability import metrics

    metrics.flush_pending()  # this process's webhook-path counts, held since the last second
    if multiprocess_dir() is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


def render_metrics(accept: str) -> tuple[bytes, str]:
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(accept)
    return encoder(metrics_registry()), content_type


def mark_process_dead() -> None:
    """On shutdown in multiprocess mode: drop this pid's live gauges from the merge."""
    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())


def counter_totals(registry: CollectorRegistry) -> dict[str, float]:
    """The few in-process figures the stats endpoint needs, read from collected samples
    (so multiprocess mode sums every process on this host)."""
    wanted = {
        "paygate_dedup_hits_total",
        "paygate_webhook_request_duration_seconds_sum",
        "paygate_webhook_request_duration_seconds_count",
    }
    out = {"local_duplicates": 0.0, "duration_sum": 0.0, "duration_count": 0.0}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name not in wanted:
                continue
            if sample.name == "paygate_dedup_hits_total":
                if sample.labels.get("layer") != _DATABASE_LAYER:
                    out["local_duplicates"] += sample.value
            elif sample.name.endswith("_sum"):
                out["duration_sum"] += sample.value
            else:
                out["duration_count"] += sample.value
    return out
