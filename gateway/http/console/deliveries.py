"""Console: stored deliveries, a delivery's raw body, and replay (after a confirmation)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from gateway import appkeys
from gateway.db import deliveries
from gateway.db.deliveries import OUTCOMES, DeliveryFilter
from gateway.errors import NotFound, ValidationError
from gateway.http.console.forms import action_form, back
from gateway.http.console.paging import Page, keyset_page
from gateway.http.console.payments import day
from gateway.http.console.render import render
from gateway.http.console.session import SESSION
from gateway.http.ops_deliveries import render_body
from gateway.ingest import replay as replaying

PAGE = 50
ONE_DAY = timedelta(days=1)


def _id(request: web.Request) -> int:
    raw = request.match_info["delivery_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound("no such delivery", code="delivery_not_found")
    return int(raw)


FILTERS = ("channel", "outcome", "reference_number", "from", "to")


def filter_of(values: dict[str, str]) -> DeliveryFilter:
    outcome = values["outcome"] or None
    if outcome is not None and outcome not in OUTCOMES:
        raise ValidationError("outcome", "unknown outcome")
    until = day(values["to"], "to")
    return DeliveryFilter(
        channel=values["channel"][:100] or None, outcome=outcome,
        reference_number=values["reference_number"][:255] or None,
        since=day(values["from"], "from"), until=until + ONE_DAY if until else None,
    )  # fmt: skip


async def list_page(request: web.Request) -> web.Response:
    q = request.query
    values = {k: q.get(k, "").strip() for k in FILTERS}
    error, page = None, Page([])
    try:
        f = filter_of(values)
        pool = request.app[appkeys.POOL]

        async def fetch(start: tuple[Any, ...] | None, back: bool, limit: int) -> list[Any]:
            after = (start[0], start[1]) if start else None
            return await deliveries.list_deliveries(pool, f, after, limit, oldest_first=back)

        page = await keyset_page(q, fetch, lambda r: (r["received_at"], r["id"]),
                                 (datetime, int), PAGE, "/console/deliveries", values)  # fmt: skip
    except ValidationError as exc:
        error = exc.detail
    return render(request, "deliveries.html", rows=page.rows, page=page, values=values,
                  outcomes=OUTCOMES, error=error)  # fmt: skip


def pretty(body: bytes) -> str:
    """As the API shows it: indented JSON with numbers as sent; the raw text when it is
    not JSON or nested too deep to indent."""
    shown = render_body(body)
    if shown["encoding"] == "base64":
        return body.decode("utf-8", errors="replace")
    return str(shown["pretty"] or shown["raw"])


async def _row(request: web.Request) -> Any:
    row = await deliveries.get_delivery(request.app[appkeys.POOL], _id(request))
    if row is None:
        raise NotFound("no such delivery", code="delivery_not_found")
    return row


async def detail_page(request: web.Request) -> web.Response:
    row = await _row(request)
    replays = await deliveries.replays_of(request.app[appkeys.POOL], row["id"])
    return render(request, "delivery.html", d=row, body=pretty(bytes(row["body"])),
                  replays=replays, error_json=orjson.dumps(row["error"]).decode()
                  if row["error"] else None)  # fmt: skip


async def confirm_page(request: web.Request) -> web.Response:
    row = await _row(request)
    return render(request, "replay_confirm.html", d=row)


async def replay(request: web.Request) -> web.StreamResponse:
    await action_form(request)
    app = request.app
    delivery_id = _id(request)
    result = await replaying.replay(
        app[appkeys.POOL], app[appkeys.PIPELINE], app[appkeys.CHANNELS], delivery_id,
        actor=request[SESSION].principal.subject,
    )  # fmt: skip
    what = result.body.get("status") or result.body.get("error") or result.outcome
    pid = result.body.get("payment_id")
    here = f"/console/deliveries/{delivery_id}"
    if result.status < 300:
        raise back(request, here, "replay_done", status=result.status, outcome=what,
                   payment=f", payment {pid}" if pid else "")  # fmt: skip
    code = "replay_refused" if result.status < 500 else "replay_failed"
    raise back(request, here, code, status=result.status, outcome=what)
