"""The period a statement covers, when the uploader did not name it.

The lines' first and last dates are a poor guess: one stray line (a late settlement,
a line of the next day's file) widens the period, and every payment of the extra days
becomes `missing_in_statement`. A statement covers the days on which it holds most of
our payments, so the inferred period is the span of the lines' dates with its edge days
trimmed while the statement covers markedly fewer of that day's payments than it does
on a typical day (less than half the median coverage), and days with no lines at the
edges go with them. If that would leave nothing, the whole span stands (a statement
that covers little everywhere is judged on all of it). Lines outside the period are
`outside_period` items, never silently matched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from statistics import median


@dataclass(frozen=True, slots=True)
class Day:
    day: date
    lines: int  # statement lines dated that day
    ours: int  # our payments of that day that a statement should show (not failed)
    missing: int  # of those, the ones whose reference is on no line of the statement

    @property
    def coverage(self) -> float | None:
        return None if self.ours == 0 else (self.ours - self.missing) / self.ours


def infer_period(days: list[Day]) -> tuple[date, date] | None:
    """`days`: one entry per day of the lines' span that has lines or payments, in order."""
    if not days:
        return None
    covered = [c for d in days if d.lines and (c := d.coverage) is not None]
    typical = median(covered) if covered else 0.0

    def stray(d: Day) -> bool:
        if d.lines == 0:
            return True
        c = d.coverage
        return c is not None and c < typical / 2

    lo, hi = 0, len(days) - 1
    while lo <= hi and stray(days[lo]):
        lo += 1
    while hi >= lo and stray(days[hi]):
        hi -= 1
    if lo > hi:
        first = [d.day for d in days if d.lines]
        return (first[0], first[-1]) if first else None
    return days[lo].day, days[hi].day
