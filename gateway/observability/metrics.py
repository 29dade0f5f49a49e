"""Every Prometheus metric paygate exports, declared once.

Names carry the `paygate_` prefix and their unit; counters end in `_total`; labels stay
low-cardinality (channel names come from configuration, never from requests). With
several server processes on one port, prometheus-client's multiprocess mode is used
(PROMETHEUS_MULTIPROC_DIR); gauges then say how values from processes combine.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram


class Children:
    """Per-request metrics of the webhook path, resolved once per label values and held
    in this process until `flush_pending()` adds them to prometheus-client.

    Two costs made this worth it, measured on the bench machine: `metric.labels(...)`
    is 1-2 µs a call, and in multiprocess mode (WEB_CONCURRENCY > 1) every `inc()`
    takes a lock, checks the pid and packs into an mmap (about 1.3 µs; a histogram
    observation is two of them). Adding to a local number is ~0.1 µs. The flush runs
    every second (observability's flusher), before every scrape this process answers
    and at shutdown, so other processes' counts reach `/metrics` within a second.
    Only for label values from a small fixed set (channel names, outcomes)."""

    def __init__(self, metric: Counter | Histogram) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], PendingCount | PendingHistogram] = {}

    def __call__(self, *labels: str) -> Any:
        child = self._children.get(labels)
        if child is None:
            real = self.metric.labels(*labels)
            child = (
                PendingHistogram(real) if isinstance(self.metric, Histogram) else PendingCount(real)
            )
            self._children[labels] = child
            _pending.append(child)
        return child


class PendingCount:
    """A counter child's increments not yet added to it."""

    __slots__ = ("child", "pending")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.pending = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.pending += amount

    def flush(self) -> None:
        if self.pending:
            amount, self.pending = self.pending, 0.0
            self.child.inc(amount)


class PendingHistogram:
    """A histogram child's observations not yet added to it, as bucket counts and a sum.

    prometheus-client has no public call to add several observations at once, so the
    flush adds to the child's `_sum` and `_buckets` values the way its `observe()` does
    (`amount <= bound` picks the bucket). tests/gateway/test_metrics.py checks the
    exposition against plain `observe()` calls, so a change of those internals fails
    there rather than in production."""

    __slots__ = ("bounds", "child", "counts", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds: tuple[float, ...] = tuple(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.total += amount

    def flush(self) -> None:
        counts = self.counts
        if not any(counts):
            return
        self.counts = [0] * len(counts)
        total, self.total = self.total, 0.0
        self.child._sum.inc(total)
        for bucket, n in zip(self.child._buckets, counts, strict=True):
            if n:
                bucket.inc(n)


_pending: list[PendingCount | PendingHistogram] = []


def flush_pending() -> None:
    """Add every held webhook-path count and observation to prometheus-client."""
    for child in _pending:
        child.flush()


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

webhook_requests = Counter(
    "paygate_webhook_requests_total",
    "Webhook deliveries by channel and outcome (created, duplicate, updated, stale, conflict, "
    "rejected, unavailable...).",
    ["channel", "outcome"],
)
webhook_duration = Histogram(
    "paygate_webhook_request_duration_seconds",
    "Time from reading a webhook to answering it.",
    ["channel"],
    buckets=LATENCY_BUCKETS,
)
signature_failures = Counter(
    "paygate_signature_failures_total",
    "Deliveries refused for their signature, by reason.",
    ["channel", "reason"],
)
dedup_hits = Counter(
    "paygate_dedup_hits_total",
    "Duplicates recognised, by the layer that recognised them (memory, redis, database).",
    ["layer"],
)
redis_errors = Counter(
    "paygate_redis_errors_total", "Redis calls that failed or timed out (dedup falls through)."
)
write_batch_size = Histogram(
    "paygate_write_batch_size",
    "Payments per group-commit transaction.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)
write_commit_duration = Histogram(
    "paygate_write_commit_duration_seconds",
    "Duration of one group-commit transaction.",
    buckets=LATENCY_BUCKETS,
)
write_queue_depth = Gauge(
    "paygate_write_queue_depth",
    "Payments waiting for the group-commit writer.",
    multiprocess_mode="livesum",
)
outbox_pending = Gauge(
    "paygate_outbox_pending",
    "Events not yet published (event log and outbox, dead letters excluded), up to 10,000.",
    multiprocess_mode="livemax",
)
outbox_oldest_age = Gauge(
    "paygate_outbox_oldest_age_seconds",
    "Age of the oldest unpublished event.",
    multiprocess_mode="livemax",
)
outbox_lag = Histogram(
    "paygate_outbox_publish_lag_seconds",
    "Time from the payment's commit to the broker's acknowledgement.",
    buckets=LATENCY_BUCKETS,
)
kafka_publish = Counter(
    "paygate_kafka_publish_total", "Outbox publish attempts by result.", ["result"]
)
dead_letters = Gauge(
    "paygate_dead_letters",
    "Outbox rows dead-lettered after too many failed attempts.",
    multiprocess_mode="livemax",
)
staging_rows = Counter(
    "paygate_staging_rows_total",
    "Staging rows handled by result (processed, duplicate, error).",
    ["result"],
)
staging_batch_duration = Histogram(
    "paygate_staging_batch_duration_seconds",
    "Duration of one staging batch.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
staging_backlog = Gauge(
    "paygate_staging_backlog", "Unprocessed staging rows.", multiprocess_mode="livemax"
)
partition_default_rows = Gauge(
    "paygate_partition_default_rows",
    "Rows sitting in a DEFAULT partition, by table.",
    ["table"],
    multiprocess_mode="livemax",
)
partition_maintenance_runs = Counter(
    "paygate_partition_maintenance_runs_total", "Partition maintenance runs by result.", ["result"]
)
partition_retention_held = Gauge(
    "paygate_partition_retention_held",
    "Payments months past retention kept because work still depends on them (kind=months), "
    "and that work by kind (pending_payments, parked_updates, unpublished_events, "
    "open_exceptions).",
    ["kind"],
    multiprocess_mode="livemax",
)
db_pool_connections = Gauge(
    "paygate_db_pool_connections",
    "Database pool connections by state (idle, in_use, max).",
    ["state"],
    multiprocess_mode="livesum",
)
db_synchronous_replication = Gauge(
    "paygate_db_synchronous_replication",
    "1 when COMMIT on the primary paygate writes to waits for a synchronous standby "
    "(synchronous_standby_names set, synchronous_commit on, remote_write or remote_apply): "
    "only then can a failover lose no acknowledged payment. 0 otherwise.",
    multiprocess_mode="livemax",
)
db_standbys = Gauge(
    "paygate_db_standbys",
    "Standby connections streaming from the primary paygate writes to, by state "
    "(sync, async, unknown: not visible to paygate's role).",
    ["state"],
    multiprocess_mode="livemax",
)
reconciliation_items = Counter(
    "paygate_reconciliation_items_total",
    "Reconciliation results by category.",
    ["category"],
)
status_updates = Counter(
    "paygate_status_updates_total",
    "Payment status events by outcome (updated, stale, duplicate, deferred, retired).",
    ["outcome"],
)
status_poll = Counter(
    "paygate_status_poll_total",
    "Provider status API calls by result (applied, unchanged, flagged, error).",
    ["result"],
)
rate_limited = Counter(
    "paygate_rate_limited_total", "Requests refused by a limit.", ["channel", "limit"]
)
unverified_refused = Counter(
    "paygate_unverified_refused_total",
    "Webhooks refused before their body was read: their source failed verification too often.",
    ["channel"],
)
rate_limit_fallback = Gauge(
    "paygate_rate_limit_fallback",
    "1 while this process decides shared rate limits on its own share (Redis unreachable).",
    multiprocess_mode="livemax",
)
rate_limit_fallback_decisions = Counter(
    "paygate_rate_limit_fallback_decisions_total",
    "Rate-limit decisions made on the process's fallback share instead of the shared bucket.",
)
rate_limit_instances = Gauge(
    "paygate_rate_limit_instances",
    "Live gateway processes last counted by the rate-limit heartbeat (the fallback divides by it).",
    multiprocess_mode="livemax",
)
gc_pause = Histogram(
    "paygate_gc_pause_seconds",
    "Time CPython's cyclic collector held this process, by generation.",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)


# -- the first scrape -----------------------------------------------------------------
# In multiprocess mode a labelled family is exported only once one of its children
# exists, so a fresh stack's first scrape lacked whole families (a dashboard showed "no
# data", an alert on absent() fired) and rate() lost every series' first increment.
# Every known label value is therefore created at zero in every process: the values that
# do not depend on configuration when this module is imported, the per-channel ones
# when the app has its channels (`zero_channel_series`). tests/gateway/test_metrics.py
# checks these lists against the modules that own the values.

WEBHOOK_OUTCOMES = (
    "created", "duplicate", "updated", "deferred", "retired", "stale", "ignored", "conflict",
    "invalid", "unauthorized", "forbidden", "rate_limited", "payload_too_large",
    "unavailable", "error",
)  # fmt: skip
SIGNATURE_REASONS = (
    "missing_signature", "malformed_signature", "signature_mismatch", "missing_timestamp",
    "malformed_timestamp", "timestamp_out_of_tolerance", "unsupported_version",
    "no_secret_configured", "untrusted_certificate", "authorization_mismatch",
)  # fmt: skip
CHANNEL_LIMITS = ("allowlist", "rate")
RECONCILIATION_CATEGORIES = (
    "matched", "matched_with_fee", "amount_mismatch", "status_mismatch",
    "missing_internal", "missing_in_statement", "duplicate_in_statement", "currency_mismatch",
    "outside_period",
)  # fmt: skip
PARTITIONED_TABLES = ("payments", "webhook_events", "audit_log")

KNOWN_LABELS: tuple[tuple[Counter | Gauge | Histogram, tuple[str, ...]], ...] = (
    (dedup_hits, ("memory", "redis", "batch", "database", "delivery")),
    (kafka_publish, ("ok", "error", "retry", "dead_letter")),
    (staging_rows, ("processed", "duplicate", "error")),
    (partition_default_rows, PARTITIONED_TABLES),
    (partition_maintenance_runs, ("ok", "partial", "held", "skipped", "error")),
    (
        partition_retention_held,
        ("months", "pending_payments", "parked_updates", "unpublished_events", "open_exceptions"),
    ),
    (db_pool_connections, ("idle", "in_use", "max")),
    (db_standbys, ("sync", "async", "unknown")),
    (reconciliation_items, RECONCILIATION_CATEGORIES),
    (status_updates, ("updated", "stale", "duplicate", "deferred", "retired")),
    (status_poll, ("applied", "unchanged", "flagged", "error")),
    (gc_pause, ("0", "1", "2")),
)


def zero_known_series() -> None:
    """Create every configuration-free labelled series at zero (idempotent)."""
    for metric, values in KNOWN_LABELS:
        for value in values:
            metric.labels(value)
    rate_limited.labels("all", "in_flight")
    rate_limited.labels("all", "connections")


def zero_channel_series(channels: Iterable[str]) -> None:
    """Create the per-channel series of the webhook path at zero (idempotent)."""
    for channel in channels:
        webhook_duration.labels(channel)
        for outcome in WEBHOOK_OUTCOMES:
            webhook_requests.labels(channel, outcome)
        for reason in SIGNATURE_REASONS:
            signature_failures.labels(channel, reason)
        for limit in CHANNEL_LIMITS:
            rate_limited.labels(channel, limit)
        unverified_refused.labels(channel)


zero_known_series()
