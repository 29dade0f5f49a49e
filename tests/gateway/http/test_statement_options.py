"""The statement-import options, one parser for the API's query and the console's form."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from gateway.errors import ValidationError
from gateway.http.ops import statement_options

CONFIGURED = Decimal("0.05")


def test_defaults_come_from_the_caller() -> None:
    opts = statement_options({}, default_tolerance=CONFIGURED, default_source="console upload")
    assert opts.tolerance == CONFIGURED
    assert opts.source == "console upload"
    assert opts.keep_matched is True
    assert opts.fee_percent == Decimal("0") and opts.fee_fixed == Decimal("0")


def test_given_values_win() -> None:
    opts = statement_options(
        {"tolerance": "0.10", "fee_percent": "1.5", "keep_matched": "0",
         "period_start": "2026-11-01", "period_end": "2026-11-30", "source": "bank"},
        default_tolerance=CONFIGURED,
    )  # fmt: skip
    assert opts.tolerance == Decimal("0.10") and opts.fee_percent == Decimal("1.5")
    assert opts.keep_matched is False
    assert (opts.period_start, opts.period_end) == (date(2026, 11, 1), date(2026, 11, 30))
    assert opts.source == "bank"


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"tolerance": "abc"}, "tolerance"),
        ({"fee_fixed": "-1"}, "fee_fixed"),
        ({"fee_percent": "NaN"}, "fee_percent"),
        ({"keep_matched": "maybe"}, "keep_matched"),
        ({"period_start": "2026-11-01"}, "period_start"),
        ({"period_start": "2026-11-30", "period_end": "2026-11-01"}, "period_start"),
        ({"period_start": "30/11/2026", "period_end": "2026-12-01"}, "period_start"),
    ],
)
def test_bad_values_name_their_field(values: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        statement_options(values, default_tolerance=CONFIGURED)
    assert caught.value.field == field
