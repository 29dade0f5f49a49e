"""The Jepsen-style check: what the provider saw acknowledged against what was stored
and what was published.

Database: every reference acknowledged (201/200) is in `payments` exactly once, with
exactly the acknowledged payment_id (and every acknowledgement of a reference carried
the same id); no payment row lacks its reference row and no reference row lacks its
payment (nothing half-written). Topic: every recorded payment reached the topic at
least once, and no event names a payment that was not recorded.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer

from tests.events import QUEUED
from tests.faults.harness import Ledger


@dataclass
class Verdict:
    acknowledged: int = 0
    payments: int = 0
    lost: list[str] = field(default_factory=list)  # acknowledged, not stored
    doubled: list[str] = field(default_factory=list)  # more than one payment row
    wrong_id: list[tuple[str, str, str]] = field(default_factory=list)  # ref, acked, stored
    ack_conflicts: list[tuple[str, str, str]] = field(default_factory=list)
    orphan_payments: list[str] = field(default_factory=list)  # no reference row
    orphan_references: list[str] = field(default_factory=list)  # no payment row
    missing_outbox: list[str] = field(default_factory=list)  # only checked with no relay

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.doubled
            or self.wrong_id
            or self.ack_conflicts
            or self.orphan_payments
            or self.orphan_references
            or self.missing_outbox
        )

    def __str__(self) -> str:
        parts = [f"acknowledged={self.acknowledged}", f"payments={self.payments}"]
        for name in (
            "lost", "doubled", "wrong_id", "ack_conflicts", "orphan_payments",
            "orphan_references", "missing_outbox",
        ):  # fmt: skip
            items = getattr(self, name)
            if items:
                parts.append(f"{name}={len(items)} e.g. {items[:3]}")
        return "Verdict(" + ", ".join(parts) + ")"


async def check_database(dsn: str, ledger: Ledger, *, outbox_intact: bool = False) -> Verdict:
    """Compare the ledger with the tables (on a fresh connection: the servers may have
    been restarted under the caller's pool). With `outbox_intact` (no relay ran), every
    payment must also still have exactly one `payment.recorded` event queued."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        payments = await conn.fetch(
            "SELECT reference_number, id::text AS id FROM payment_service.payments"
        )
        references = await conn.fetch(
            "SELECT reference_number, payment_id::text AS id"
            " FROM payment_service.payment_references"
        )
        outbox = (
            await conn.fetch(
                f"SELECT key, count(*) AS n FROM {QUEUED} e"
                " WHERE event_type = 'payment.recorded' GROUP BY key"
            )
            if outbox_intact
            else []
        )
    finally:
        await conn.close()

    stored: dict[str, list[str]] = defaultdict(list)
    for row in payments:
        stored[row["reference_number"]].append(row["id"])
    claimed = {row["reference_number"]: row["id"] for row in references}

    v = Verdict(acknowledged=len(ledger.acked), payments=len(payments))
    v.ack_conflicts = list(ledger.ack_conflicts)
    for ref, acked_id in ledger.acked.items():
        ids = stored.get(ref)
        if not ids:
            v.lost.append(ref)
        elif acked_id not in ids:
            v.wrong_id.append((ref, acked_id, ids[0]))
    v.doubled = [ref for ref, ids in stored.items() if len(ids) > 1]
    for ref, ids in stored.items():
        if claimed.get(ref) not in ids:
            v.orphan_payments.append(ref)
    v.orphan_references = [ref for ref in claimed if ref not in stored]
    if outbox_intact:
        events = {row["key"]: row["n"] for row in outbox}
        v.missing_outbox = [ref for ref in stored if events.get(ref) != 1]
    return v


async def recorded_payments(dsn: str) -> dict[str, str]:
    """reference -> payment id, for every payment row."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT reference_number, id::text AS id FROM payment_service.payments"
        )
    finally:
        await conn.close()
    return {row["reference_number"]: row["id"] for row in rows}


@dataclass
class TopicVerdict:
    expected: int
    seen: int
    missing: list[str] = field(default_factory=list)  # recorded, never published
    unknown: list[tuple[str, str]] = field(default_factory=list)  # (ref, id) not recorded

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unknown

    def __str__(self) -> str:
        return (
            f"TopicVerdict(expected={self.expected}, seen={self.seen}, "
            f"missing={len(self.missing)} e.g. {self.missing[:3]}, "
            f"unknown={len(self.unknown)} e.g. {self.unknown[:3]})"
        )


async def check_topic(
    bootstrap: str,
    topic: str,
    recorded: dict[str, str],
    *,
    must_see: Collection[str] | None = None,
    timeout: float = 30.0,
) -> TopicVerdict:
    """Consume `topic` from the beginning until every reference in `must_see` (default:
    all of `recorded`) has its `payment.recorded` event, or the deadline passes. Events
    for a payment not in `recorded` (or with another id) are reported as unknown."""
    wanted = set(recorded if must_see is None else must_see)
    seen: set[str] = set()
    unknown: list[tuple[str, str]] = []
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        request_timeout_ms=10_000,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while not wanted <= seen and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batches.values():
                for record in records:
                    assert record.value is not None
                    event = orjson.loads(record.value)
                    if event.get("event_type") != "payment.recorded":
                        continue
                    ref = event["payment"]["reference_number"]
                    pid = event["payment"]["id"]
                    if recorded.get(ref) != pid:
                        unknown.append((ref, pid))
                    seen.add(ref)
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    missing = sorted(wanted - seen)
    return TopicVerdict(expected=len(wanted), seen=len(seen & wanted), missing=missing,
                        unknown=unknown)  # fmt: skip
