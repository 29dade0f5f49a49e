"""One cell guard for every CSV paygate writes (issue 28, item 2)."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.domain.spreadsheet import cell, row

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    "text",
    ['=HYPERLINK("http://evil.example","x")', "+SUM(1,2)", "-2+3+cmd|' /C calc'!A0",
     "@SUM(1)", "\t=1+1", "\r=1+1", "\n=1", "-", "+", "=", "-1e5", "- 5"],
)  # fmt: skip
def test_a_cell_a_spreadsheet_would_evaluate_is_written_as_text(text: str) -> None:
    assert cell(text) == "'" + text


@pytest.mark.parametrize("value", ["-40.00", "+1", "12.5", "0", "INV-1001", "a=b", " =x"])
def test_data_stays_as_it_is(value: str) -> None:
    assert cell(value) == value


def test_values_of_every_type() -> None:
    assert row([None, Decimal("-0.66"), 3, datetime(2026, 10, 5, 1, 2)]) == [
        "", "-0.66", "3", "2026-10-05T01:02:00",
    ]  # fmt: skip
    assert cell({"note": "=x"}) == '{"note":"=x"}'  # JSON starts with "{": inert


def test_every_csv_writer_writes_through_the_guard() -> None:
    """Each `writerow(...)` in the service writes `spreadsheet.row(...)` or a header constant."""
    calls = []
    for path in [*ROOT.glob("gateway/**/*.py"), *ROOT.glob("workers/**/*.py")]:
        for line in path.read_text().splitlines():
            if ".writerow(" in line or ".writerows(" in line:
                calls.append((path.name, line.strip()))
    assert calls, "no CSV writer found: the scan is broken"
    unguarded = [
        c for c in calls
        if "spreadsheet.row(" not in c[1]
        and re.search(r"\.writerow\((?:[a-z_]+\.)?[A-Z_]+\)", c[1]) is None
    ]  # fmt: skip
    assert not unguarded
