"""Console: payment search and a payment's page with its timeline."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web

from gateway import appkeys
from gateway.db import payment_search, timeline
from gateway.db.payment_search import SOURCES, PaymentFilter
from gateway.domain.model import STATUSES
from gateway.errors import NotFound, ValidationError
from gateway.http.console.paging import Page, keyset_page
from gateway.http.console.render import render

PAGE = 50
FIELDS = ("reference_number", "cif", "loan_account_number", "status", "source", "channel",
          "from", "to")  # fmt: skip


def day(raw: str | None, name: str) -> datetime | None:
    if not raw:
        return None
    try:
        return datetime.combine(date.fromisoformat(raw[:10]), datetime.min.time(), tzinfo=UTC)
    except ValueError:
        raise ValidationError(name, "must be a date YYYY-MM-DD") from None


def filter_of(q: Any) -> PaymentFilter:
    def text(name: str) -> str | None:
        value = (q.get(name) or "").strip()
        if len(value) > 255:
            raise ValidationError(name, "at most 255 characters")
        return value or None

    status, source = text("status"), text("source")
    if status is not None and status not in STATUSES:
        raise ValidationError("status", "unknown status")
    if source is not None and source not in SOURCES:
        raise ValidationError("source", "unknown source")
    return PaymentFilter(
        reference_prefix=text("reference_number"), cif=text("cif"),
        loan_account_number=text("loan_account_number"), status=status, source=source,
        channel=text("channel"), since=day(q.get("from"), "from"), until=through(q.get("to")),
    )  # fmt: skip


def through(raw: str | None) -> datetime | None:
    """The end of the day `to` names: "to 2026-11-24" includes the 24th."""
    last = day(raw, "to")
    return last + timedelta(days=1) if last else None


async def search_page(request: web.Request) -> web.Response:
    q = request.query
    values = {name: q.get(name, "") for name in FIELDS}
    error = None
    page = Page([])
    try:
        f = filter_of(q)
        pool = request.app[appkeys.POOL]

        async def fetch(start: tuple[Any, ...] | None, back: bool, limit: int) -> list[Any]:
            after = (start[0], uuid.UUID(start[1])) if start else None
            return await payment_search.search(pool, f, after, limit, ascending=back)

        page = await keyset_page(q, fetch, lambda r: (r["created_at"], str(r["id"])),
                                 (datetime, str), PAGE, "/console/payments", values)  # fmt: skip
    except (ValidationError, ValueError) as exc:
        error = exc.detail if isinstance(exc, ValidationError) else "not a cursor"
    return render(request, "payments.html", rows=page.rows, page=page, values=values,
                  error=error, statuses=STATUSES, sources=SOURCES)  # fmt: skip


async def payment_page(request: web.Request) -> web.Response:
    pool = request.app[appkeys.POOL]
    payment = await timeline.find_payment(pool, request.match_info["payment"])
    if payment is None:
        raise NotFound("no payment with this id or reference", code="payment_not_found")
    parts = await timeline.timeline_parts(pool, payment)
    entries: list[dict[str, Any]] = []
    for d in parts["deliveries"]:
        entries.append({"at": d["received_at"], "kind": "delivery", "what": d["outcome"],
                        "by": d["channel"], "link": f"/console/deliveries/{d['id']}"})  # fmt: skip
    for a in parts["audit"]:
        entries.append({"at": a["created_at"], "kind": "audit", "what": a["action"],
                        "by": a["actor"], "details": a["details"]})  # fmt: skip
    for e in parts["events"]:
        entries.append({"at": e["at"], "kind": "event", "what": e["event_type"],
                        "state": e["state"], "details": e.get("change")})  # fmt: skip
    for i in parts["reconciliation"]:
        link = f"/console/exceptions/item/{i['id']}"
        entries.append({"at": i["created_at"], "kind": "reconciliation", "what": i["category"],
                        "state": i["state"], "link": link})  # fmt: skip
    for v in parts["reviews"]:
        link = f"/console/exceptions/review/{v['id']}"
        entries.append({"at": v["created_at"], "kind": "review", "what": v["reason"],
                        "state": v["state"], "link": link})  # fmt: skip
    entries.sort(key=lambda e: e["at"])
    return render(request, "payment.html", payment=payment, entries=entries,
                  events=parts["events"])  # fmt: skip
