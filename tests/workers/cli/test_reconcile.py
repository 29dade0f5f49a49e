"""`paygate reconcile` prints what the API gives: the summary and, for each malformed
line, its number and what was wrong (the run keeps them; the summary only counts them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import make_settings
from workers.cli import main as cli
from workers.cli import reconcile

STATEMENT = (
    "reference_number,amount,payment_date\n"
    "R-OK-1,10.00,2026-11-20\n"
    "R-BAD-AMOUNT,abc,2026-11-20\n"
    "R-OK-2,11.00,2026-11-20\n"
    "R-BAD-DATE,12.00,20.11.2026\n"
)


async def _reconcile(stack: Any, path: Path, *extra: str) -> int:
    args = cli.build_parser().parse_args(["reconcile", str(path), *extra])
    return await reconcile.run(args, make_settings(stack))


async def test_malformed_lines_are_printed_with_their_numbers(
    stack: Any, db: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "statement.csv"
    path.write_text(STATEMENT)
    assert await _reconcile(stack, path) == 0
    out = capsys.readouterr().out
    assert "malformed 2" in out
    tail = out[out.index("malformed lines:") :].splitlines()
    assert tail == [
        "malformed lines:",
        "  line 3: amount is not a decimal with at most 2 places",
        "  line 5: payment_date is not a valid date",
    ]

    assert await _reconcile(stack, path, "--json") == 0
    summary = orjson.loads(capsys.readouterr().out)
    assert summary["errors"] == [
        {"line": 3, "error": "amount is not a decimal with at most 2 places"},
        {"line": 5, "error": "payment_date is not a valid date"},
    ]


def test_more_malformed_lines_than_shown_point_at_the_run() -> None:
    errors = [{"line": n, "error": "amount is not a decimal"} for n in range(2, 32)]
    summary = {
        "run_id": "r-1", "source": "s.csv", "period": {"start": None, "end": None},
        "total_lines": 1500, "malformed_lines": 1200, "exceptions": 0,
        "counts": {},
    }  # fmt: skip
    lines = reconcile.render(summary, errors).splitlines()
    shown = [line for line in lines if line.startswith("  line ")]
    assert len(shown) == reconcile.SHOWN_ERRORS and shown[0] == "  line 2: amount is not a decimal"
    assert lines[-1] == "  ... 1180 more: GET /api/v1/reconciliation/runs/r-1 lists them"
