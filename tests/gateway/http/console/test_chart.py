"""The overview chart is pure: counts per minute in, SVG out."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from gateway.http.console import chart

END = datetime(2026, 12, 3, 12, 30, 40, tzinfo=UTC)
NS = "{http://www.w3.org/2000/svg}"


def test_counts_land_in_their_minute_and_outside_ones_are_dropped() -> None:
    minute = END.replace(second=0, microsecond=0)
    data = chart.series(
        [(minute, "created", 5), (minute - timedelta(minutes=1), "created", 2),
         (minute, "invalid", 1), (minute - timedelta(days=2), "created", 99)],
        END,
    )  # fmt: skip
    assert list(data) == ["created", "invalid"]  # busiest first
    assert data["created"][-1] == 5 and data["created"][-2] == 2
    assert sum(data["created"]) == 7 and len(data["created"]) == chart.MINUTES


def test_the_svg_has_one_line_per_outcome_scaled_to_a_round_top() -> None:
    minute = END.replace(second=0, microsecond=0)
    data = chart.series([(minute, "created", 26), (minute, "duplicate", 3)], END)
    root = ET.fromstring(chart.svg(data, END))
    lines = root.findall(f"{NS}polyline")
    assert [line.find(f"{NS}title").text for line in lines] == ["created", "duplicate"]  # type: ignore[union-attr]
    labels = [t.text for t in root.findall(f"{NS}text")]
    assert "50" in labels and "25" in labels  # 1-2-5 steps: 26 -> 50
    last_point = lines[0].get("points", "").split()[-1]
    assert (
        float(last_point.split(",")[1]) < chart.TOP + (chart.HEIGHT - chart.TOP - chart.BOTTOM) / 2
    )
    assert chart.legend(data) == [("created", chart.COLOURS["created"], 26),
                                  ("duplicate", chart.COLOURS["duplicate"], 3)]  # fmt: skip


def test_an_empty_day_says_so() -> None:
    assert "no deliveries in the last 24 hours" in chart.svg({}, END)
