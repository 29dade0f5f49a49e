"""The inferred period of a statement (gateway.domain.statement_period), and the
categories' documentation."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from gateway.domain.statement_period import Day, infer_period
from gateway.domain.statements import CATEGORIES

DOCS = Path(__file__).resolve().parents[3] / "docs" / "reconciliation.md"


def d(day: int, lines: int, ours: int, missing: int) -> Day:
    return Day(date(2026, 10, day), lines, ours, missing)


def test_a_stray_edge_day_is_trimmed() -> None:
    days = [d(5, 2, 2, 0), d(6, 2, 2, 0), d(7, 2, 2, 0), d(8, 1, 3, 2)]
    assert infer_period(days) == (date(2026, 10, 5), date(2026, 10, 7))


def test_a_stray_line_days_away_is_trimmed_with_the_gap() -> None:
    days = [d(1, 1, 4, 4), d(2, 0, 5, 5), d(5, 9, 9, 0), d(6, 8, 9, 1)]
    assert infer_period(days) == (date(2026, 10, 5), date(2026, 10, 6))


def test_a_statement_that_covers_little_everywhere_keeps_its_span() -> None:
    days = [d(5, 1, 10, 9), d(6, 1, 10, 9), d(7, 1, 10, 8)]
    assert infer_period(days) == (date(2026, 10, 5), date(2026, 10, 7))


def test_days_without_our_payments_are_kept() -> None:
    days = [d(5, 3, 0, 0), d(6, 2, 2, 0), d(7, 1, 0, 0)]
    assert infer_period(days) == (date(2026, 10, 5), date(2026, 10, 7))


def test_an_empty_statement_has_no_period() -> None:
    assert infer_period([]) is None


def test_every_category_is_a_metric_label_from_the_first_scrape() -> None:
    from gateway.observability.metrics import RECONCILIATION_CATEGORIES

    assert RECONCILIATION_CATEGORIES == CATEGORIES


def test_every_category_has_a_row_in_the_docs() -> None:
    text = DOCS.read_text()
    missing = [c for c in CATEGORIES if f"| `{c}` |" not in text]
    assert not missing
