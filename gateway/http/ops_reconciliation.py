"""Ops API: reconciliation runs and the exception workflow.

    GET  /api/v1/reconciliation/runs?limit=&cursor=        newest first, with summaries
    GET  /api/v1/exceptions?state=&kind=&category=&run_id=&reference_number=&assignee=
         &min_amount=&older_than_hours=&limit=&cursor=&format=csv
         reconciliation items (exception categories) and payment reviews, oldest first;
         state defaults to `unresolved` (open or assigned): the open-exceptions queue
    GET  /api/v1/exceptions/{kind}/{id}                     one, with comments and audit
    POST /api/v1/exceptions/{kind}/{id}/assign              {"assignee"}
    POST /api/v1/exceptions/{kind}/{id}/resolve             {"resolution","note","payment_id"}
    POST /api/v1/exceptions/{kind}/{id}/comments            {"body"}
    POST /api/v1/exceptions/item/{id}/accept_suggestion     a case-only suggested match
    POST /api/v1/exceptions/bulk                            {"items":[{"kind","id"}],
                                                             "action", and its fields}
Every step is audited with the token's subject.
"""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from gateway import appkeys
from gateway.db import exceptions as db
from gateway.db.exceptions import ExceptionFilter, Target
from gateway.db.reconciliation import list_runs
from gateway.domain import cursors, spreadsheet
from gateway.domain import exception_workflow as wf
from gateway.errors import NotFound, ValidationError
from gateway.http import ops_query as params
from gateway.http.ops_query import actor, answer

BULK_MAX = 1000


async def runs_page(request: web.Request) -> dict[str, Any]:
    q = request.query
    limit = params.limit(q)
    after = params.cursor(q, (datetime, str))
    key = None
    if after is not None:
        try:
            key = (after[0], uuid.UUID(after[1]))
        except ValueError:
            raise ValidationError("cursor", "not a cursor this API returned") from None
    rows = await list_runs(request.app[appkeys.POOL], key, limit)
    items = [dict(r) for r in rows]
    last = rows[-1] if len(rows) == limit else None
    return {
        "items": items,
        "count": len(items),
        "next_cursor": cursors.encode(last["started_at"], str(last["id"])) if last else None,
    }


async def get_runs(request: web.Request) -> web.Response:
    return answer(await runs_page(request))


def exception_filter(q: Any) -> ExceptionFilter:
    hours = q.get("older_than_hours")
    before = None
    if hours:
        try:
            value = float(hours)
        except ValueError:
            raise ValidationError("older_than_hours", "must be a number") from None
        if not 0 <= value <= 24 * 365 * 100:
            raise ValidationError("older_than_hours", "out of range")
        before = datetime.now(UTC) - timedelta(hours=value)
    return ExceptionFilter(
        state=params.choice(q, "state", wf.STATE_FILTERS) or wf.UNRESOLVED,
        kind=params.choice(q, "kind", wf.KINDS),
        category=params.text(q, "category", 64),
        run_id=params.uuid_param(q, "run_id"),
        reference_number=params.text(q, "reference_number"),
        assignee=params.text(q, "assignee"),
        min_amount=params.decimal(q, "min_amount"),
        created_before=before,
    )


def _cursor(q: Any) -> db.Cursor | None:
    after = params.cursor(q, (datetime, str, int))
    if after is None:
        return None
    if after[1] not in wf.KINDS:
        raise ValidationError("cursor", "not a cursor this API returned")
    return (after[0], after[1], after[2])


async def exceptions_page(request: web.Request) -> dict[str, Any]:
    q = request.query
    f = exception_filter(q)
    limit = params.limit(q)
    rows = await db.list_exceptions(request.app[appkeys.POOL], f, _cursor(q), limit)
    items = [dict(r) for r in rows]
    last = rows[-1] if len(rows) == limit else None
    return {
        "items": items,
        "count": len(items),
        "next_cursor": cursors.encode(last["created_at"], last["kind"], last["id"])
        if last
        else None,
    }


async def get_exceptions(request: web.Request) -> web.StreamResponse:
    if request.query.get("format") == "csv":
        return await export_csv(request)
    return answer(await exceptions_page(request))


async def export_csv(request: web.Request) -> web.StreamResponse:
    """Every exception the filter names, streamed page by page."""
    f = exception_filter(request.query)
    pool = request.app[appkeys.POOL]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="exceptions.csv"',
        }
    )
    await response.prepare(request)
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(db.EXPORT_COLUMNS)
    after: db.Cursor | None = None
    while True:
        rows = await db.list_exceptions(pool, f, after, 2000)
        for r in rows:
            out.writerow(spreadsheet.row([r[c] for c in db.EXPORT_COLUMNS]))
        await response.write(buf.getvalue().encode())
        buf.seek(0)
        buf.truncate()
        if len(rows) < 2000:
            break
        last = rows[-1]
        after = (last["created_at"], last["kind"], last["id"])
    await response.write_eof()
    return response


def _target(request: web.Request) -> tuple[str, int]:
    kind = request.match_info["kind"]
    if kind not in wf.KINDS:
        raise NotFound("no such exception kind", code="exception_not_found")
    return kind, params.path_int(request, "item_id", "exception_not_found")


async def exception_detail(request: web.Request) -> dict[str, Any]:
    kind, item_id = _target(request)
    found = await db.get_exception(request.app[appkeys.POOL], kind, item_id)
    if found is None:
        raise NotFound(f"no such exception: {kind} {item_id}", code="exception_not_found")
    return found


async def get_exception(request: web.Request) -> web.Response:
    return answer(await exception_detail(request))


async def act(request: web.Request, action: str, doc: dict[str, Any]) -> dict[str, Any]:
    """One workflow step on the exception in the path (the API and the console)."""
    kind, item_id = _target(request)
    pool = request.app[appkeys.POOL]
    who = actor(request)
    if action == "assign":
        row = await db.assign(pool, kind, item_id, wf.assignee(doc.get("assignee")), actor=who)
    elif action == "resolve":
        resolution = wf.resolution(doc.get("resolution"), doc.get("note"), doc.get("payment_id"))
        row = await db.resolve(pool, kind, item_id, resolution, actor=who)
    else:
        row = await db.add_comment(pool, kind, item_id, wf.comment(doc.get("body")), actor=who)
    return row


async def post_assign(request: web.Request) -> web.Response:
    return answer(await act(request, "assign", await params.json_object(request)))


async def post_resolve(request: web.Request) -> web.Response:
    return answer(await act(request, "resolve", await params.json_object(request)))


async def post_accept(request: web.Request) -> web.Response:
    """Accept the suggested match of a case-only reference difference (audited)."""
    kind, item_id = _target(request)
    if kind != wf.ITEM:
        raise NotFound("only reconciliation items have suggested matches", code="no_suggestion")
    found = await db.accept_suggestion(request.app[appkeys.POOL], item_id, actor=actor(request))
    return answer(found)


async def post_comment(request: web.Request) -> web.Response:
    doc = await params.json_object(request)
    return answer(await act(request, "comment", doc), 201)


def targets(raw: object) -> list[Target]:
    if not isinstance(raw, list) or not raw:
        raise ValidationError("items", "must be a non-empty list of {kind, id}")
    if len(raw) > BULK_MAX:
        raise ValidationError("items", f"at most {BULK_MAX} at once")
    out = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise ValidationError("items", "each item is {kind, id}")
        item_id = entry.get("id")
        if not isinstance(item_id, int) or isinstance(item_id, bool) or not 0 < item_id < 2**63:
            raise ValidationError("items", "each id is a positive integer")
        out.append(Target(wf.kind(entry.get("kind")), item_id))
    return out


async def bulk(request: web.Request, doc: dict[str, Any]) -> dict[str, Any]:
    action = doc.get("action")
    if action not in wf.ACTIONS:
        raise ValidationError("action", "must be one of " + ", ".join(wf.ACTIONS))
    items = targets(doc.get("items"))
    kwargs: dict[str, Any] = {}
    if action == "assign":
        kwargs["name"] = wf.assignee(doc.get("assignee"))
    elif action == "resolve":
        kwargs["resolution"] = wf.resolution(
            doc.get("resolution"), doc.get("note"), doc.get("payment_id")
        )
    else:
        kwargs["body"] = wf.comment(doc.get("body"))
    results = await db.bulk(
        request.app[appkeys.POOL], items, str(action), actor=actor(request), **kwargs
    )
    done = sum(1 for r in results if r["ok"])
    return {"action": action, "done": done, "failed": len(results) - done, "results": results}


async def post_bulk(request: web.Request) -> web.Response:
    return answer(await bulk(request, await params.json_object(request)))
