"""What the paged list queries (payments, deliveries, exceptions) share: numbered
parameters while a query is built, and the keyset step past the last row of a page."""

from __future__ import annotations

from typing import Any


class Params:
    """The positional parameters of a query being built: `add(value)` is its `$n`."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def after(column: str, at: str, last: str, *, ascending: bool) -> str:
    """Rows past (`at`, `last`) in (`column`, id) order. Spelled out rather than as a row
    comparison, `(column, id) > (...)`: with an index on `column` alone only this form
    gives its scan a starting point."""
    if ascending:
        return f"{column} >= {at} AND ({column} > {at} OR id > {last})"
    return f"{column} <= {at} AND ({column} < {at} OR id < {last})"
