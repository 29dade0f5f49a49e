"""Links and keyset pages for the console's lists.

Every query string a page builds goes through `href` (urlencode): a filter value such as
`nobody&state=all` stays one value, it cannot add parameters to the export link or the
next page's.

A list walks its index in one direction; a page is the rows past a key (`cursor`, the
next page) or before it (`before`: the same walk the other way, turned round). Each page
fetches one row more than it shows, so a link to a further page is offered only when
there is one; a page reached from another always offers the way back and to the first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from gateway.domain import cursors

FORWARD = "cursor"
BACKWARD = "before"


def href(path: str, params: Mapping[str, object]) -> str:
    """`path` with the non-empty `params` as its query string, each value encoded."""
    query = urlencode([(k, str(v)) for k, v in params.items() if v not in (None, "")])
    return f"{path}?{query}" if query else path


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    first: str | None = None  # the first page, when this is not it
    back: str | None = None  # the page before this one
    next: str | None = None  # the page after this one


# (key to start past or None, walk backwards, how many) -> rows in that walk's order
Fetch = Callable[[tuple[Any, ...] | None, bool, int], Awaitable[Sequence[Any]]]


async def keyset_page(
    query: Mapping[str, str],
    fetch: Fetch,
    key: Callable[[Any], tuple[Any, ...]],
    shape: tuple[type, ...],
    size: int,
    path: str,
    filters: Mapping[str, object],
) -> Page:
    """One page of a list (ValidationError for a cursor this console did not make)."""
    backwards = bool(query.get(BACKWARD))
    raw = query.get(BACKWARD) or query.get(FORWARD)
    start = cursors.decode(raw, shape, BACKWARD if backwards else FORWARD) if raw else None
    fetched = list(await fetch(start, backwards, size + 1))
    more = len(fetched) > size
    rows = fetched[:size]
    if backwards:
        rows.reverse()

    def link(param: str, row: Any) -> str:
        return href(path, {**filters, param: cursors.encode(*key(row))})

    further_back = more if backwards else start is not None
    further_on = True if backwards else more
    return Page(
        rows,
        first=href(path, filters) if start is not None else None,
        back=link(BACKWARD, rows[0]) if rows and further_back else None,
        next=link(FORWARD, rows[-1]) if rows and further_on else None,
    )
