"""The month arithmetic and the plan, with no database: the calendar's awkward corners."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.config import Settings
from gateway.db.partition_plan import (
    Existing,
    Month,
    TableSpec,
    bound_literal,
    months_window,
    parse_bound,
    plan_table,
    table_specs,
)

PAYMENTS = TableSpec("payments", "payment_date", False, 2)
EVENTS = TableSpec("webhook_events", "received_at", True, 1)


def utc(
    year: int, month: int, day: int = 1, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def existing_for(table: str, *months: Month) -> list[Existing]:
    parts = [Existing(f"{table}_{m.suffix}", m.start, m.add(1).start) for m in months]
    return [*parts, Existing(f"{table}_default", None, None, is_default=True)]


def test_month_arithmetic_crosses_years_both_ways() -> None:
    assert Month(2026, 11).add(3) == Month(2027, 2)
    assert Month(2026, 1).add(-1) == Month(2025, 12)
    assert Month(2026, 12).add(1) == Month(2027, 1)
    assert Month(2026, 5).add(-17) == Month(2024, 12)
    assert Month(2026, 5).add(0) == Month(2026, 5)


def test_window_spans_retention_to_premake_inclusive() -> None:
    window = months_window(utc(2026, 11, 24, 9), retention_months=2, premake_months=3)
    assert [m.suffix for m in window] == [
        "2026_09", "2026_10", "2026_11", "2026_12", "2027_01", "2027_02",
    ]  # fmt: skip


def test_plan_on_an_empty_table_creates_the_whole_window_with_utc_month_bounds() -> None:
    plan = plan_table(PAYMENTS, utc(2026, 12, 31, 23, 59, 59), 2, existing_for("payments"))
    assert [p.name for p in plan.create] == [
        "payments_2026_10", "payments_2026_11", "payments_2026_12",
        "payments_2027_01", "payments_2027_02",
    ]  # fmt: skip
    december = plan.create[2]
    assert (december.lower, december.upper) == (utc(2026, 12, 1), utc(2027, 1, 1))
    assert plan.retention_start == utc(2026, 10, 1)
    assert plan.retire == ()


def test_month_of_now_is_taken_in_utc() -> None:
    # 23:30 on 31 December at UTC-2 is already January in UTC.
    late = datetime(2026, 12, 31, 23, 30, tzinfo=timezone(timedelta(hours=-2)))
    assert Month.of(late) == Month(2027, 1)
    # A naive clock is read as UTC.
    assert Month.of(datetime(2027, 1, 1, 0, 0)) == Month(2027, 1)
    assert Month.of(datetime(2026, 12, 31, 23, 59, 59, 999999)) == Month(2026, 12)


def test_leap_february_bounds() -> None:
    plan = plan_table(PAYMENTS, utc(2028, 2, 29, 23, 59, 59), 0, existing_for("payments"))
    february = next(p for p in plan.create if p.name == "payments_2028_02")
    assert (february.lower, february.upper) == (utc(2028, 2, 1), utc(2028, 3, 1))
    assert bound_literal(february.upper, False) == "'2028-03-01 00:00:00'"
    assert bound_literal(february.lower, True) == "'2028-02-01 00:00:00+00'"
    assert plan.create[-1].name == "payments_2028_02"


def test_after_a_long_outage_every_missing_month_is_planned() -> None:
    before = Month(2026, 1)
    existing = existing_for(
        "payments", before.add(-2), before.add(-1), before, before.add(1), before.add(2)
    )
    plan = plan_table(PAYMENTS, utc(2026, 8, 10), 2, existing)
    # Seven months later: retention start is June, premake reaches October.
    assert [p.name for p in plan.create] == [
        "payments_2026_06", "payments_2026_07", "payments_2026_08",
        "payments_2026_09", "payments_2026_10",
    ]  # fmt: skip
    assert [e.name for e in plan.retire] == [
        "payments_2025_11", "payments_2025_12", "payments_2026_01",
        "payments_2026_02", "payments_2026_03",
    ]  # fmt: skip


def test_retention_is_by_upper_bound_and_never_touches_default() -> None:
    existing = existing_for("webhook_events", Month(2026, 9), Month(2026, 10), Month(2026, 11))
    plan = plan_table(EVENTS, utc(2026, 11, 1), 1, existing)
    # Retention start is 2026-10-01: September's upper bound equals it, so it goes.
    assert [e.name for e in plan.retire] == ["webhook_events_2026_09"]
    assert "webhook_events_default" in [e.name for e in plan.keep]
    assert [p.name for p in plan.create] == ["webhook_events_2026_12"]


def test_existing_partitions_with_matching_bounds_are_kept_whatever_their_name() -> None:
    odd = Existing("payments_november", utc(2026, 11, 1), utc(2026, 12, 1))
    plan = plan_table(PAYMENTS, utc(2026, 11, 15), 0, [odd])
    assert "payments_2026_11" not in [p.name for p in plan.create]
    assert odd in plan.keep


def test_an_overlapping_partition_is_a_conflict_not_a_create() -> None:
    quarter = Existing("payments_2026_q4", utc(2026, 10, 1), utc(2027, 1, 1))
    plan = plan_table(PAYMENTS, utc(2026, 11, 15), 1, [quarter])
    assert [p.name for p in plan.conflicts] == [
        "payments_2026_10", "payments_2026_11", "payments_2026_12",
    ]  # fmt: skip
    assert [p.name for p in plan.create] == ["payments_2026_09"]


def test_only_the_upper_bound_decides_retirement() -> None:
    old = Existing("payments_archive", None, utc(2020, 1, 1))
    plan = plan_table(PAYMENTS, utc(2026, 11, 15), 0, [old])
    assert [e.name for e in plan.retire] == ["payments_archive"]
    unbounded = Existing("payments_history", None, None)
    plan = plan_table(PAYMENTS, utc(2026, 11, 15), 0, [unbounded])
    assert plan.retire == ()


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("DEFAULT", None),
        (
            "FOR VALUES FROM ('2026-11-01 00:00:00') TO ('2026-12-01 00:00:00')",
            (utc(2026, 11, 1), utc(2026, 12, 1)),
        ),
        (
            "FOR VALUES FROM ('2028-02-01 00:00:00+00') TO ('2028-03-01 00:00:00+00')",
            (utc(2028, 2, 1), utc(2028, 3, 1)),
        ),
        (
            "FOR VALUES FROM ('2026-11-01 01:00:00+01') TO (MAXVALUE)",
            (utc(2026, 11, 1), None),
        ),
        ("FOR VALUES FROM (MINVALUE) TO ('2020-01-01 00:00:00')", (None, utc(2020, 1, 1))),
    ],
)
def test_parse_bound(expr: str, expected: tuple[datetime | None, datetime | None] | None) -> None:
    assert parse_bound(expr) == expected


def test_parse_bound_refuses_what_it_does_not_understand() -> None:
    with pytest.raises(ValueError):
        parse_bound("FOR VALUES IN ('a')")


AUDIT = TableSpec("audit_log", "created_at", True, 84, since_install=True)


def test_server_stamped_tables_start_at_the_install_month() -> None:
    """audit_log keeps 84 months, but on a database installed this month it can hold no
    older row: its partitions start at the install, not in 2019."""
    now = utc(2026, 11, 24)
    plan = plan_table(AUDIT, now, 3, existing_for("audit_log"), installed=utc(2026, 11, 3))
    assert [p.name for p in plan.create] == [
        "audit_log_2026_11", "audit_log_2026_12", "audit_log_2027_01", "audit_log_2027_02",
    ]  # fmt: skip
    assert plan.retention_start == utc(2019, 11, 1)  # retention itself is unchanged
    later = plan_table(AUDIT, utc(2028, 3, 2), 3, existing_for("audit_log"), utc(2026, 11, 3))
    assert later.create[0].name == "audit_log_2026_11"
    unknown = plan_table(AUDIT, now, 3, existing_for("audit_log"), installed=None)
    assert len(unknown.create) == 84 + 3 + 1


def test_a_clock_before_the_install_still_gets_its_month() -> None:
    plan = plan_table(AUDIT, utc(2026, 6, 10), 1, existing_for("audit_log"), utc(2026, 11, 3))
    assert [p.name for p in plan.create] == ["audit_log_2026_06", "audit_log_2026_07"]


def test_payments_keep_their_months_back_to_retention_whatever_the_install() -> None:
    """payment_date is the provider's: validation accepts it back to the retention start,
    so those months are premade, not left to DEFAULT."""
    plan = plan_table(PAYMENTS, utc(2026, 11, 24), 1, existing_for("payments"), utc(2026, 11, 3))
    assert [p.name for p in plan.create] == [
        "payments_2026_09", "payments_2026_10", "payments_2026_11", "payments_2026_12",
    ]  # fmt: skip


def test_the_specs_start_the_server_stamped_tables_at_the_install() -> None:
    specs = {s.name: s.since_install for s in table_specs(Settings())}
    assert specs == {"payments": False, "webhook_events": True, "audit_log": True}
