"""Finding payments: GET /api/v1/payments (search, keyset pages) and
GET /api/v1/payments/{id or reference} (the payment with its timeline).

Which index serves which filter: gateway.db.payment_search and gateway.db.timeline.
`stats` and `webhook` are not payment keys (GET /api/v1/payments/stats is the stats
endpoint; the webhook paths answer 405 to a GET): such a reference is found by search.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web

from gateway import appkeys
from gateway.db import payment_search, timeline
from gateway.domain.model import ACCOUNT_MAX, CIF_MAX, STATUSES
from gateway.errors import NotFound
from gateway.http import ops_query as q

# The route's pattern for {key}: anything but the two reserved words.
KEY_PATTERN = r"(?!(?:stats|webhook)$)[^/]+"


def payment_filter(query: q.Query) -> payment_search.PaymentFilter:
    since, until = q.time_range(query)
    return payment_search.PaymentFilter(
        reference_number=q.text(query, "reference_number"),
        cif=q.text(query, "cif", CIF_MAX),
        loan_account_number=q.text(query, "loan_account_number", ACCOUNT_MAX),
        status=q.choice(query, "status", STATUSES),
        source=q.choice(query, "source", payment_search.SOURCES),
        channel=q.text(query, "channel", 100),
        since=since,
        until=until,
    )


async def search_page(request: web.Request) -> dict[str, Any]:
    """One page of the search, as the API answers it (the console renders the same)."""
    query = request.query
    f = payment_filter(query)
    page = q.limit(query)
    after = q.cursor(query, (datetime, str))
    key = (after[0], q.cursor_uuid(after[1])) if after is not None else None
    rows = await payment_search.search(request.app[appkeys.POOL], f, key, page)
    items = q.records(rows)
    return {"items": items, "next_cursor": q.next_cursor(items, page, "created_at", "id")}


async def list_payments(request: web.Request) -> web.Response:
    return q.answer(await search_page(request))


async def payment_with_timeline(request: web.Request, key: str) -> dict[str, Any]:
    pool = request.app[appkeys.POOL]
    payment = await timeline.find_payment(pool, key)
    if payment is None:
        raise NotFound("no payment has this id or reference", code="payment_not_found")
    parts = await timeline.timeline_parts(pool, payment)
    return {"payment": dict(payment), **parts, "timeline": timeline.merged(parts)}


async def get_payment(request: web.Request) -> web.Response:
    return q.answer(await payment_with_timeline(request, request.match_info["key"]))
