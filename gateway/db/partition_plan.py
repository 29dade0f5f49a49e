"""What partition maintenance should do, computed without touching the database.

The maintainer reads the catalog, hands the attached partitions and a clock to
`plan_table`, and executes the answer. Keeping the month arithmetic pure lets the
tests walk the calendar (year ends, leap Februaries, a seven-month outage) in
microseconds, and lets `paygate partitions status` show a plan without running it.

Conventions (pg_partman's, by idea): one partition per calendar month named
`<table>_YYYY_MM`, premade `premake` months ahead, a DEFAULT partition for anything
outside, and retention decided by a partition's upper bound, not by its name.
All bounds are UTC month starts.

Where the months start: a table whose rows are stamped with the server's clock
(`webhook_events.received_at`, `audit_log.created_at`) can hold nothing older than the
install, so its partitions start at the install month, not at its retention start (an
84-month audit retention once made 88 empty partitions back to 2019 on a fresh
database). `payments` is partitioned by the provider's `payment_date`, which validation
accepts back to PARTITION_RETENTION_MONTHS: a payment that old is legitimate on the day
of the install, so its months are premade back to the retention start rather than left
to DEFAULT, where every such row would be a health warning and wait to be moved.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import Settings
from gateway.db.tables import PARTITIONED_TABLES


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def of(cls, moment: datetime) -> Month:
        """The UTC calendar month holding `moment` (a naive datetime is taken as UTC)."""
        utc = as_utc(moment)
        return cls(utc.year, utc.month)

    def add(self, months: int) -> Month:
        index = self.year * 12 + (self.month - 1) + months
        return Month(index // 12, index % 12 + 1)

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def suffix(self) -> str:
        return f"{self.year:04d}_{self.month:02d}"


@dataclass(frozen=True)
class TableSpec:
    """A RANGE-partitioned table kept in monthly partitions."""

    name: str
    column: str
    with_time_zone: bool
    retention_months: int
    # Rows carry the server's clock: nothing can be older than the install.
    since_install: bool = False


@dataclass(frozen=True)
class Partition:
    """A monthly partition maintenance wants to exist."""

    table: str
    name: str
    lower: datetime
    upper: datetime


@dataclass(frozen=True)
class Existing:
    """An attached partition as the catalog reports it; bounds are None for the
    DEFAULT partition and for MINVALUE/MAXVALUE ends."""

    name: str
    lower: datetime | None
    upper: datetime | None
    is_default: bool = False


@dataclass(frozen=True)
class TablePlan:
    spec: TableSpec
    retention_start: datetime
    create: tuple[Partition, ...]
    retire: tuple[Existing, ...]
    keep: tuple[Existing, ...]
    # Wanted months an existing partition with other bounds overlaps: left alone, reported.
    conflicts: tuple[Partition, ...]


def table_specs(settings: Settings) -> tuple[TableSpec, ...]:
    """One spec for each of gateway.db.tables.PARTITIONED_TABLES, in that order."""
    specs = {
        "payments": TableSpec(
            "payments", "payment_date", False, settings.partition_retention_months
        ),
        "webhook_events": TableSpec(
            "webhook_events",
            "received_at",
            True,
            settings.webhook_events_retention_months,
            since_install=True,
        ),
        "audit_log": TableSpec(
            "audit_log",
            "created_at",
            True,
            settings.audit_log_retention_months,
            since_install=True,
        ),
    }
    return tuple(specs[name] for name in PARTITIONED_TABLES)


def as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def months_window(now: datetime, retention_months: int, premake_months: int) -> list[Month]:
    """Every month from retention start to `premake` months ahead, both ends included."""
    current = Month.of(now)
    return [current.add(n) for n in range(-retention_months, premake_months + 1)]


def partition_name(table: str, month: Month) -> str:
    return f"{table}_{month.suffix}"


def bound_literal(moment: datetime, with_time_zone: bool) -> str:
    """A SQL literal for a partition bound: TIMESTAMP columns get a naive UTC value,
    TIMESTAMPTZ columns an explicit +00 so the session time zone cannot shift it."""
    text = as_utc(moment).strftime("%Y-%m-%d %H:%M:%S")
    return f"'{text}+00'" if with_time_zone else f"'{text}'"


def plan_table(
    spec: TableSpec,
    now: datetime,
    premake_months: int,
    existing: Iterable[Existing],
    installed: datetime | None = None,
) -> TablePlan:
    """`installed`: when the schema was first migrated (None: unknown, every month from
    the retention start is wanted)."""
    attached = [e for e in existing if not e.is_default]
    window = months_window(now, spec.retention_months, premake_months)
    retention_start = window[0].start
    if spec.since_install and installed is not None:
        # A clock set back (tests walk the calendar) still gets its current month.
        first = min(Month.of(installed), Month.of(now))
        window = [m for m in window if m >= first]
    create: list[Partition] = []
    conflicts: list[Partition] = []
    for month in window:
        wanted = Partition(
            spec.name, partition_name(spec.name, month), month.start, month.add(1).start
        )
        if any(_same_bounds(e, wanted) for e in attached):
            continue
        if any(_overlaps(e, wanted) or e.name == wanted.name for e in attached):
            conflicts.append(wanted)
        else:
            create.append(wanted)
    retire = tuple(e for e in attached if e.upper is not None and e.upper <= retention_start)
    keep = tuple(e for e in existing if e not in retire)
    return TablePlan(spec, retention_start, tuple(create), retire, keep, tuple(conflicts))


def _same_bounds(e: Existing, p: Partition) -> bool:
    return e.lower == p.lower and e.upper == p.upper


def _overlaps(e: Existing, p: Partition) -> bool:
    lower_ok = e.lower is None or e.lower < p.upper
    upper_ok = e.upper is None or e.upper > p.lower
    return lower_ok and upper_ok


_BOUND = re.compile(r"FROM \((.+?)\) TO \((.+?)\)$")


def parse_bound(expr: str) -> tuple[datetime | None, datetime | None] | None:
    """Bounds from `pg_get_expr(relpartbound)`: None for DEFAULT, None ends for
    MINVALUE/MAXVALUE; naive values (TIMESTAMP) are read as UTC."""
    if expr.strip() == "DEFAULT":
        return None
    found = _BOUND.search(expr.strip())
    if not found:
        raise ValueError(f"not a single-column range bound: {expr!r}")
    return _bound_value(found.group(1)), _bound_value(found.group(2))


def _bound_value(text: str) -> datetime | None:
    text = text.strip()
    if text in ("MINVALUE", "MAXVALUE"):
        return None
    return as_utc(datetime.fromisoformat(text.strip("'")))
