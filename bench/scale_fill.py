"""Synthetic history for bench.scale, written with COPY.

A merchant's tables as they look after months of traffic: payments spread over the
payments retention plus the month that is about to leave it (so maintenance has an old
month to detach), one webhook delivery per webhook payment for the deliveries' retention,
an audit row per payment (and one per status change), and `payment_references` for the
reference TTL only (older ones were pruned). References look like a provider's (a prefix
and 24 random characters), so B-tree inserts land anywhere in the index, as they do in
production. Customers have a long tail; statuses are mostly `succeeded`.

The history is filled month by month, oldest first, each month's rows in time order (ids
are UUIDv7 of the recording time, as the gateway makes them). A step asks for a total: a
month is topped up to its share of it, so steps are cumulative and a month dropped by a
maintenance measurement is refilled by the next step. A block of days is kept free of
history: each step's statement day goes there, so a statement covers exactly its own
payments.
"""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import orjson

from gateway.db.partition_plan import Month
from gateway.domain.model import business_hash

SCHEMA = "payment_service"
CHUNK = 50_000
STATEMENT_DAYS = 8  # the reserved block: one statement day per step, and room to spare
_PREFIXES = ("pi_", "ch_", "py_", "txn_", "PSP")
_CHANNELS = ("card", "bank_transfer", "wallet", "cash")
_STATUSES = (("succeeded", 94), ("pending", 3), ("failed", 2), ("refunded", 1))

PAYMENT_COLUMNS = [
    "id", "reference_number", "loan_account_number", "cif", "amount", "payment_date",
    "payment_channel", "source", "status", "status_updated_at", "created_at",
]  # fmt: skip
REFERENCE_COLUMNS = ["reference_number", "payment_id", "payment_date", "payload_hash", "created_at"]
EVENT_COLUMNS = [
    "received_at", "channel", "delivery_id", "reference_number", "payment_id", "outcome", "body",
]  # fmt: skip
AUDIT_COLUMNS = ["created_at", "actor", "action", "reference_number", "payment_id", "details"]


@dataclass(frozen=True)
class Span:
    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return max(0.0, (self.end - self.start).total_seconds())


@dataclass
class History:
    """What the filled tables look like, fixed at the start of a run."""

    now: datetime
    payments_months: int  # PARTITION_RETENTION_MONTHS: history starts one month before
    events_months: int  # WEBHOOK_EVENTS_RETENTION_MONTHS
    ttl_days: int  # REFERENCE_CACHE_TTL_DAYS
    filled: dict[Month, int] = field(default_factory=dict)  # history rows per month

    @property
    def first_month(self) -> Month:
        return Month.of(self.now).add(-self.payments_months - 1)

    @property
    def events_since(self) -> datetime:
        return Month.of(self.now).add(-self.events_months).start

    @property
    def references_since(self) -> datetime:
        return self.now - timedelta(days=self.ttl_days)

    @property
    def reserved(self) -> Span:
        """Days with no history: statement days live there."""
        day = self.now.replace(hour=0, minute=0, second=0, microsecond=0)
        return Span(day - timedelta(days=STATEMENT_DAYS + 2), day - timedelta(days=2))

    def statement_day(self, step: int) -> Span:
        start = self.reserved.start + timedelta(days=step % STATEMENT_DAYS)
        return Span(start, start + timedelta(days=1))

    def month_spans(self, month: Month) -> list[Span]:
        """The parts of `month` that hold history (before now, outside the reserved days)."""
        whole = Span(month.start, min(month.add(1).start, self.now))
        r = self.reserved
        if whole.end <= r.start or whole.start >= r.end:
            return [whole] if whole.seconds else []
        parts = [Span(whole.start, r.start), Span(r.end, whole.end)]
        return [p for p in parts if p.seconds > 0]

    def months(self) -> list[Month]:
        out, m = [], self.first_month
        while m.start < self.now:
            out.append(m)
            m = m.add(1)
        return out

    def targets(self, total: int) -> dict[Month, int]:
        """Each month's share of `total` history payments, by its seconds of history."""
        seconds = {m: sum(s.seconds for s in self.month_spans(m)) for m in self.months()}
        whole = sum(seconds.values())
        return {m: round(total * s / whole) for m, s in seconds.items()}


@dataclass
class Rows:
    payments: list[tuple[object, ...]] = field(default_factory=list)
    references: list[tuple[object, ...]] = field(default_factory=list)
    events: list[tuple[object, ...]] = field(default_factory=list)
    audit: list[tuple[object, ...]] = field(default_factory=list)

    async def copy(self, conn: asyncpg.Connection) -> None:
        for table, columns, records in (
            ("payments", PAYMENT_COLUMNS, self.payments),
            ("payment_references", REFERENCE_COLUMNS, self.references),
            ("webhook_events", EVENT_COLUMNS, self.events),
            ("audit_log", AUDIT_COLUMNS, self.audit),
        ):
            if records:
                await conn.copy_records_to_table(
                    table, schema_name=SCHEMA, columns=columns, records=records
                )


class Generator:
    """Payments as the gateway records them, with their references, deliveries and audit."""

    def __init__(self, history: History, seed: int, customers: int) -> None:
        self.h = history
        self.rng = random.Random(seed)
        self.customers = max(customers, 100)

    def reference(self) -> str:
        token = base64.b32encode(self.rng.randbytes(15)).decode().lower()
        return self.rng.choice(_PREFIXES) + token

    def uuid7(self, at: datetime) -> uuid.UUID:
        ms = int(at.timestamp() * 1000)
        rand = self.rng.getrandbits(74)
        value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | (rand >> 62) << 64
        return uuid.UUID(int=value | 0b10 << 62 | rand & 0x3FFF_FFFF_FFFF_FFFF)

    def status(self) -> str:
        roll = self.rng.randrange(100)
        for status, share in _STATUSES:
            if roll < share:
                return status
            roll -= share
        return "succeeded"

    def times(self, spans: list[Span], count: int) -> list[datetime]:
        """`count` recording times spread evenly at random over `spans`, in order."""
        total = sum(s.seconds for s in spans)
        out = []
        for _ in range(count):
            at = self.rng.random() * total
            for s in spans:
                if at < s.seconds:
                    out.append(s.start + timedelta(seconds=at))
                    break
                at -= s.seconds
        out.sort()
        return out

    def rows(self, times: list[datetime], *, references: bool = True) -> Rows:
        rows, rng, h = Rows(), self.rng, self.h
        for at in times:
            ref = self.reference()
            pid = self.uuid7(at)
            customer = int(self.customers * rng.random() ** 2)
            cif = f"CIF{customer:07d}"
            account = f"LA{customer * 3 + (rng.random() < 0.1):08d}"
            amount = Decimal(int(10 ** rng.uniform(2, 7))).scaleb(-2)
            # The provider's date, a few minutes before we received it, whole seconds.
            paid = (at - timedelta(seconds=rng.randrange(600))).replace(microsecond=0)
            paid = max(paid, at.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
            day = paid.replace(tzinfo=None)
            channel = _CHANNELS[rng.randrange(4)]
            webhook = rng.random() < 0.9
            status = self.status()
            source = "webhook" if webhook else "staging"
            rows.payments.append(
                (pid, ref, account, cif, amount, day, channel, source, status, at, at)
            )
            if references and at >= h.references_since:
                digest = business_hash(ref, account, cif, amount, day)
                rows.references.append((ref, pid, day, bytes.fromhex(digest), at))
            if webhook and at >= h.events_since:
                body = orjson.dumps({
                    "reference_number": ref, "loan_account_number": account, "cif": cif,
                    "amount": str(amount), "payment_date": day.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "payment_channel": channel, "status": status,
                })  # fmt: skip
                delivery = f"msg_{pid.hex[:26]}"
                rows.events.append((at, "generic", delivery, ref, pid, "created", body))
                if rng.random() < 0.02:  # a refused delivery now and then
                    rows.events.append((at, "generic", delivery + "x", ref, None, "invalid", body))
            details = orjson.dumps({"source": source, "status": status}).decode()
            rows.audit.append((at, source, "created", ref, pid, details))
            if status != "succeeded":
                change = orjson.dumps({"from": "pending", "to": status}).decode()
                rows.audit.append((at, "webhook", "status_changed", ref, pid, change))
        return rows


def chunks(items: list[datetime], size: int = CHUNK) -> Iterator[list[datetime]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def fill_history(conn: asyncpg.Connection, history: History, total: int, seed: int) -> int:
    """Top every month up to its share of `total`; return the payments written."""
    gen = Generator(history, seed, customers=total // 20)
    written = 0
    for month, target in history.targets(total).items():
        missing = target - history.filled.get(month, 0)
        if missing <= 0:
            continue
        for part in chunks(gen.times(history.month_spans(month), missing)):
            await gen.rows(part).copy(conn)
            written += len(part)
        history.filled[month] = target
    return written


async def fill_day(conn: asyncpg.Connection, history: History, day: Span, count: int,
                   seed: int, customers: int) -> list[tuple[str, Decimal, datetime]]:  # fmt: skip
    """`count` payments recorded on `day` (a statement's), with everything they carry;
    returns (reference, amount, payment date) of each, for the statement."""
    gen = Generator(history, seed, customers)
    out: list[tuple[str, Decimal, datetime]] = []
    for part in chunks(gen.times([day], count)):
        rows = gen.rows(part)
        await rows.copy(conn)
        out.extend((str(p[1]), Decimal(str(p[4])), p[5]) for p in rows.payments)  # type: ignore[misc]
    return out


async def fill_expired_references(
    conn: asyncpg.Connection, history: History, count: int, seed: int
) -> None:
    """A day's worth of references that have just passed the TTL: what one day of
    pruning deletes (their payments are long recorded; pruning never reads them)."""
    gen = Generator(history, seed, 100)
    end = datetime.now(UTC) - timedelta(days=history.ttl_days, minutes=5)
    for part in chunks(gen.times([Span(end - timedelta(days=1), end)], count)):
        await conn.copy_records_to_table(
            "payment_references", schema_name=SCHEMA, columns=REFERENCE_COLUMNS,
            records=[(gen.reference(), gen.uuid7(at), at.replace(tzinfo=None), bytes(32), at)
                     for at in part],
        )  # fmt: skip


async def fill_default(conn: asyncpg.Connection, history: History, month: Month, count: int,
                       seed: int) -> None:  # fmt: skip
    """`count` payments dated in `month`, which has no partition yet: they land in
    payments_default and wait there for maintenance to create their month."""
    gen = Generator(history, seed, 100)
    spans = [Span(month.start, month.add(1).start)]
    for part in chunks(gen.times(spans, count)):
        rows = gen.rows(part, references=False)
        await conn.copy_records_to_table(
            "payments", schema_name=SCHEMA, columns=PAYMENT_COLUMNS, records=rows.payments
        )
