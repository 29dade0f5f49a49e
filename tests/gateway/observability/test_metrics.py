"""The webhook path's held metrics (gateway.observability.metrics.Children): what a
flush adds must be exactly what prometheus-client's own calls would have recorded, and
held counts must reach the registry without a scrape (every second) and at shutdown."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest

from gateway.observability import metrics
from tests.conftest import wait_for
from tests.webhooks import payment_doc, post_webhook

BUCKETS = (0.001, 0.005, 0.01, 0.1, 1.0)
# Below, on and between the bounds, above the last finite one, and zero.
AMOUNTS = (0.0, 0.0005, 0.001, 0.0010001, 0.005, 0.007, 0.1, 0.5, 1.0, 3.0, 250.0)


def _histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram("t_seconds", "test", ["channel"], buckets=BUCKETS, registry=registry)


def test_held_histogram_flushes_what_observe_would_have_recorded() -> None:
    direct, held = CollectorRegistry(), CollectorRegistry()
    plain = _histogram(direct)
    children = metrics.Children(_histogram(held))
    for amount in AMOUNTS:
        plain.labels("a").observe(amount)
        children("a").observe(amount)
    children("a").flush()
    assert _samples(held) == _samples(direct)


def _samples(registry: CollectorRegistry) -> list[bytes]:
    """The exposition without its `_created` timestamps (they differ by construction)."""
    return [s for s in generate_latest(registry).splitlines() if b"_created" not in s]


def test_held_histogram_adds_nothing_until_flushed_and_nothing_twice() -> None:
    held = CollectorRegistry()
    children = metrics.Children(_histogram(held))
    children("a").observe(0.5)
    assert held.get_sample_value("t_seconds_count", {"channel": "a"}) == 0
    children("a").flush()
    children("a").flush()
    assert held.get_sample_value("t_seconds_count", {"channel": "a"}) == 1
    assert held.get_sample_value("t_seconds_bucket", {"channel": "a", "le": "0.1"}) == 0
    assert held.get_sample_value("t_seconds_bucket", {"channel": "a", "le": "1.0"}) == 1
    assert held.get_sample_value("t_seconds_sum", {"channel": "a"}) == 0.5


def test_held_counter_keeps_labels_apart() -> None:
    held = CollectorRegistry()
    children = metrics.Children(Counter("t", "test", ["outcome"], registry=held))
    for _ in range(3):
        children("created").inc()
    children("duplicate").inc(2)
    assert held.get_sample_value("t_total", {"outcome": "created"}) == 0  # held
    metrics.flush_pending()
    assert held.get_sample_value("t_total", {"outcome": "created"}) == 3
    assert held.get_sample_value("t_total", {"outcome": "duplicate"}) == 2


def _created_requests() -> float:
    labels = {"channel": "generic", "outcome": "created"}
    return REGISTRY.get_sample_value("paygate_webhook_requests_total", labels) or 0.0


async def test_held_counts_reach_the_registry_without_a_scrape(client: Any, db: Any) -> None:
    metrics.flush_pending()
    before = _created_requests()
    assert (await post_webhook(client, payment_doc()))[0] == 201

    async def counted() -> bool:
        return _created_requests() == before + 1  # read directly: no /metrics call flushes

    await wait_for(counted, timeout=5 * metrics_flush_seconds())


async def test_held_counts_are_flushed_at_shutdown(
    make_client: Any, db: Any, monkeypatch: Any
) -> None:
    from gateway.observability import gauges

    monkeypatch.setattr(gauges, "HELD_FLUSH_SECONDS", 3600.0)  # no periodic flush
    client = await make_client()
    metrics.flush_pending()
    before = _created_requests()
    assert (await post_webhook(client, payment_doc()))[0] == 201
    assert _created_requests() == before  # held
    await client.close()
    assert _created_requests() == before + 1


def metrics_flush_seconds() -> float:
    from gateway.observability import gauges

    return gauges.HELD_FLUSH_SECONDS


def test_the_first_scrape_label_values_are_the_ones_their_owners_use() -> None:
    """metrics.py writes the known label values out (observability imports neither the
    domain nor the ingest path); each list must stay the owner's."""
    from gateway.db.tables import PARTITIONED_TABLES
    from gateway.domain.lifecycle import Outcome
    from gateway.domain.statements import CATEGORIES
    from gateway.ingest.pipeline import _BATCH_OUTCOMES
    from gateway.ingest.signatures import REASONS

    assert set(metrics.SIGNATURE_REASONS) == REASONS
    assert metrics.RECONCILIATION_CATEGORIES == CATEGORIES
    assert tuple(PARTITIONED_TABLES) == metrics.PARTITIONED_TABLES
    known = dict(metrics.KNOWN_LABELS)
    assert {o.value for o in Outcome} | {"deferred"} == set(known[metrics.status_updates])
    assert set(_BATCH_OUTCOMES) <= set(metrics.WEBHOOK_OUTCOMES)


def test_known_series_start_at_zero_for_every_channel() -> None:
    metrics.zero_channel_series(["first-scrape-test"])
    for outcome in metrics.WEBHOOK_OUTCOMES:
        labels = {"channel": "first-scrape-test", "outcome": outcome}
        assert REGISTRY.get_sample_value("paygate_webhook_requests_total", labels) == 0.0
    for name, labels in [
        (
            "paygate_signature_failures_total",
            {"channel": "first-scrape-test", "reason": "signature_mismatch"},
        ),
        ("paygate_rate_limited_total", {"channel": "first-scrape-test", "limit": "rate"}),
        ("paygate_webhook_request_duration_seconds_count", {"channel": "first-scrape-test"}),
    ]:
        assert REGISTRY.get_sample_value(name, labels) == 0.0, name
    # and, from import, the families with no channel
    assert (
        REGISTRY.get_sample_value("paygate_kafka_publish_total", {"result": "dead_letter"})
        is not None
    )
    assert (
        REGISTRY.get_sample_value("paygate_gc_pause_seconds_count", {"generation": "2"}) is not None
    )
