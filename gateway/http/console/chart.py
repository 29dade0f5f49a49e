"""The overview's chart, drawn on the server as SVG: deliveries per minute by outcome over
the last 24 hours. People look at a chart rather than read numbers, and an SVG needs
neither JavaScript nor a charting library. Pure: counts in, markup out."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from html import escape

WIDTH, HEIGHT = 960, 240
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 12, 28
COLOURS = {
    "created": "#2e7d32", "duplicate": "#1565c0", "updated": "#6a1b9a", "stale": "#8d6e63",
    "deferred": "#00838f", "conflict": "#ef6c00", "invalid": "#c62828",
    "invalid_json": "#ad1457", "ignored": "#757575",
}  # fmt: skip
MINUTES = 24 * 60


def series(
    counts: Iterable[tuple[datetime, str, int]], end: datetime, minutes: int = MINUTES
) -> dict[str, list[int]]:
    """Counts per outcome, one slot per minute, the last slot the minute of `end`."""
    last = end.replace(second=0, microsecond=0)
    first = last - timedelta(minutes=minutes - 1)
    out: dict[str, list[int]] = {}
    for minute, outcome, n in counts:
        slot = int((minute - first).total_seconds() // 60)
        if 0 <= slot < minutes:
            out.setdefault(outcome, [0] * minutes)[slot] += n
    return dict(sorted(out.items(), key=lambda kv: -sum(kv[1])))


def _nice(peak: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above the peak."""
    scale = 1
    while True:
        for step in (1, 2, 5):
            if step * scale >= peak:
                return step * scale
        scale *= 10


def svg(data: dict[str, list[int]], end: datetime, minutes: int = MINUTES) -> str:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    peak = max((max(v) for v in data.values()), default=0)
    top = _nice(max(peak, 1))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="deliveries per minute by outcome, last 24 hours" '
        f'class="chart">',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fafafa" '
        f'stroke="#ddd"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        y = TOP + plot_h * (1 - frac)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#e0e0e0"/>')  # fmt: skip
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" '
                     f'font-size="11">{top * frac:g}</text>')  # fmt: skip
    first = end.replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
    for hour in range(0, minutes // 60 + 1, 3):
        slot = min(hour * 60, minutes - 1)
        x = LEFT + plot_w * slot / (minutes - 1)
        label = (first + timedelta(minutes=slot)).strftime("%H:%M")
        anchor = "end" if slot == minutes - 1 else "start" if slot == 0 else "middle"
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}" '
                     f'font-size="11">{label}</text>')  # fmt: skip
    for outcome, values in data.items():
        colour = COLOURS.get(outcome, "#000")
        points = " ".join(
            f"{LEFT + plot_w * i / (minutes - 1):.1f},{TOP + plot_h * (1 - v / top):.1f}"
            for i, v in enumerate(values)
        )
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.2" '
                     f'points="{points}"><title>{escape(outcome)}</title></polyline>')  # fmt: skip
    if not data:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" font-size="13" '
            'fill="#777">no deliveries in the last 24 hours</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def legend(data: dict[str, list[int]]) -> list[tuple[str, str, int]]:
    """(outcome, colour, total) for the chart's key."""
    return [(o, COLOURS.get(o, "#000"), sum(v)) for o, v in data.items()]
