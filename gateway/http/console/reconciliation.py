"""Console: upload a statement, the runs, a run's items by category, the exception queue,
one exception with its comments and trail, the workflow's actions, and the CSV export."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import datetime
from typing import Any

from aiohttp import BodyPartReader, web

from gateway import appkeys
from gateway.db import exceptions as workflow_db
from gateway.db import reconciliation as recon_db
from gateway.db.exceptions import ExceptionFilter, Target
from gateway.domain import exception_workflow as wf
from gateway.domain import spreadsheet
from gateway.domain.statements import (
    CATEGORIES,
    StatementError,
)
from gateway.errors import Conflict, NotFound, ValidationError
from gateway.http.console.forms import action_form, back, field
from gateway.http.console.paging import Page, href, keyset_page
from gateway.http.console.render import render
from gateway.http.console.session import CSRF_FIELD, SESSION, check_csrf
from gateway.http.ops import statement_options
from gateway.http.statement_upload import UploadLimits, part_chunks, spool

PAGE = 50


def _actor(request: web.Request) -> str:
    return request[SESSION].principal.subject


async def runs_page(request: web.Request) -> web.Response:
    runs = await recon_db.list_runs(request.app[appkeys.POOL], None, PAGE)
    return render(request, "reconciliation.html", runs=runs, error=None)


async def upload(request: web.Request) -> web.StreamResponse:
    """A multipart form: the CSRF token first, the options, then the file (streamed)."""
    reader = await request.multipart()
    values: dict[str, str] = {}
    secret = request.app[appkeys.SETTINGS].admin_jwt_secret
    checked = False
    while True:
        part = await reader.next()
        if part is None:
            raise back(request, "/console/reconciliation", "statement_missing")
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        if part.name == CSRF_FIELD:
            check_csrf(request, secret, (await part.text())[:200])
            checked = True
            continue
        if not checked:
            check_csrf(request, secret, None)  # the token must come before anything else
        if part.name == "statement":
            break
        values[part.name] = (await part.text())[:1000].strip()
    statement_part = part
    # A blank field means its default (the configured tolerance, say); an unticked
    # checkbox is not sent at all.
    filled = {"keep_matched": "0", **{k: v for k, v in values.items() if v}}
    settings = request.app[appkeys.SETTINGS]
    try:
        # The run is titled by the uploaded file's name unless a source is given.
        options = statement_options(
            filled, default_tolerance=settings.reconcile_amount_tolerance,
            default_source=_file_name(statement_part) or "console upload",
            default_date_tolerance=settings.reconcile_date_tolerance_days,
        )  # fmt: skip
    except ValidationError as exc:
        raise back(request, "/console/reconciliation", "statement_option_invalid",
                   field=exc.field, detail=exc.detail) from None  # fmt: skip
    statement = await spool(part_chunks(statement_part), UploadLimits.of(settings),
                            _file_name(statement_part))  # fmt: skip
    try:
        imported = await recon_db.reconcile_statement(
            request.app[appkeys.POOL], statement, options,
            topic=settings.kafka_topic, actor=_actor(request),
        )  # fmt: skip
    except StatementError as exc:
        raise back(request, "/console/reconciliation", "statement_refused",
                   reason=str(exc)) from None  # fmt: skip
    finally:
        statement.close()
    summary = imported.summary
    here = f"/console/reconciliation/runs/{summary['run_id']}"
    if not imported.created:
        raise back(request, here, "statement_already_imported")
    request.app[appkeys.OUTBOX_WAKE].ring()
    raise back(request, here, "statement_imported", exceptions=summary["exceptions"])


def _file_name(part: BodyPartReader) -> str | None:
    name = (part.filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:200] if name and name.isprintable() else None


async def run_page(request: web.Request) -> web.Response:
    try:
        run_id = uuid.UUID(request.match_info["run_id"])
    except ValueError:
        raise NotFound("no such run", code="run_not_found") from None
    pool = request.app[appkeys.POOL]
    run = await recon_db.get_run(pool, run_id)
    if run is None:
        raise NotFound("no such run", code="run_not_found")
    category = request.query.get("category") or None
    if category is not None and category not in CATEGORIES:
        category = None
    items = await recon_db.run_items(pool, run_id, category, 0, 200)
    return render(request, "run.html", run=run, items=items, category=category,
                  categories=CATEGORIES)  # fmt: skip


def _filter(q: Any) -> ExceptionFilter:
    state = q.get("state") or wf.UNRESOLVED
    if state not in wf.STATE_FILTERS:
        raise ValidationError("state", "unknown state")
    kind = q.get("kind") or None
    if kind is not None and kind not in wf.KINDS:
        raise ValidationError("kind", "unknown kind")
    run_id = None
    if q.get("run_id"):
        try:
            run_id = uuid.UUID(q["run_id"])
        except ValueError:
            raise ValidationError("run_id", "must be a run id") from None
    return ExceptionFilter(state=state, kind=kind, category=(q.get("category") or None),
                           run_id=run_id, assignee=(q.get("assignee") or None))  # fmt: skip


async def queue_page(request: web.Request) -> web.Response:
    q = request.query
    values = {k: q.get(k, "") for k in ("state", "kind", "category", "run_id", "assignee")}
    error, page = None, Page([])
    try:
        f = _filter(q)
        pool = request.app[appkeys.POOL]

        async def fetch(start: tuple[Any, ...] | None, back: bool, limit: int) -> list[Any]:
            after = (start[0], start[1], start[2]) if start else None
            return await workflow_db.list_exceptions(pool, f, after, limit, newest_first=back)

        page = await keyset_page(q, fetch, lambda r: (r["created_at"], r["kind"], r["id"]),
                                 (datetime, str, int), PAGE, "/console/exceptions",
                                 values)  # fmt: skip
    except ValidationError as exc:
        error = exc.detail
    return render(request, "exceptions.html", rows=page.rows, page=page, values=values,
                  error=error, export=href("/console/exceptions.csv", values),
                  states=wf.STATE_FILTERS, resolutions=wf.RESOLUTIONS)  # fmt: skip


def _target(request: web.Request) -> tuple[str, int]:
    kind, raw = request.match_info["kind"], request.match_info["item_id"]
    if kind not in wf.KINDS or not raw.isdigit() or len(raw) > 18:
        raise NotFound("no such exception", code="exception_not_found")
    return kind, int(raw)


async def exception_page(request: web.Request) -> web.Response:
    kind, item_id = _target(request)
    found = await workflow_db.get_exception(request.app[appkeys.POOL], kind, item_id)
    if found is None:
        raise NotFound("no such exception", code="exception_not_found")
    return render(request, "exception.html", x=found["exception"], comments=found["comments"],
                  trail=found["audit"], resolutions=wf.RESOLUTIONS)  # fmt: skip


async def act(request: web.Request) -> web.StreamResponse:
    form = await action_form(request)
    kind, item_id = _target(request)
    action = request.match_info["action"]
    pool, who = request.app[appkeys.POOL], _actor(request)
    here = f"/console/exceptions/{kind}/{item_id}"
    values: dict[str, object] = {}
    try:
        if action == "assign":
            await workflow_db.assign(pool, kind, item_id, wf.assignee(field(form, "assignee")),
                                     actor=who)  # fmt: skip
            notice = "exception_assigned"
        elif action == "resolve":
            resolution = wf.resolution(field(form, "resolution"), field(form, "note") or None,
                                       field(form, "payment_id") or None)  # fmt: skip
            await workflow_db.resolve(pool, kind, item_id, resolution, actor=who)
            notice, values["resolution"] = "exception_resolved", resolution.code
        elif action == "accept_suggestion" and kind == wf.ITEM:
            await workflow_db.accept_suggestion(pool, item_id, actor=who)
            notice = "exception_suggestion_accepted"
        elif action == "comment":
            await workflow_db.add_comment(pool, kind, item_id, wf.comment(field(form, "body")),
                                          actor=who)  # fmt: skip
            notice = "exception_commented"
        else:
            raise NotFound("no such action")
    except (ValidationError, Conflict) as exc:
        raise back(request, here, "exception_refused", detail=exc.detail) from None
    raise back(request, here, notice, **values)


async def bulk(request: web.Request) -> web.StreamResponse:
    form = await action_form(request)
    targets = []
    for raw in form.getall("item", []):
        kind, _, num = str(raw).partition(":")
        if kind in wf.KINDS and num.isdigit() and len(num) < 19:
            targets.append(Target(kind, int(num)))
    if not targets:
        raise back(request, "/console/exceptions", "bulk_none_chosen")
    action = field(form, "action")
    try:
        if action == "assign":
            results = await workflow_db.bulk(request.app[appkeys.POOL], targets, "assign",
                                             actor=_actor(request),
                                             name=wf.assignee(field(form, "assignee")))  # fmt: skip
        elif action == "resolve":
            resolution = wf.resolution(field(form, "resolution"), field(form, "note") or None)
            results = await workflow_db.bulk(
                request.app[appkeys.POOL], targets, "resolve", actor=_actor(request),
                resolution=resolution,
            )  # fmt: skip
        else:
            raise ValidationError("action", "choose assign or resolve")
    except ValidationError as exc:
        raise back(request, "/console/exceptions", "bulk_refused", detail=exc.detail) from None
    done = sum(1 for r in results if r["ok"])
    refused = len(results) - done
    raise back(request, "/console/exceptions", "bulk_partly_refused" if refused else "bulk_done",
               action=action, done=done, refused=refused)  # fmt: skip


async def export(request: web.Request) -> web.StreamResponse:
    try:
        f = _filter(request.query)
    except ValidationError as exc:
        raise back(request, "/console/exceptions", "export_refused", detail=exc.detail) from None
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": 'attachment; filename="exceptions.csv"',
    })  # fmt: skip
    await response.prepare(request)
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(workflow_db.EXPORT_COLUMNS)
    after = None
    while True:
        rows = await workflow_db.list_exceptions(request.app[appkeys.POOL], f, after, 2000)
        for r in rows:
            out.writerow(spreadsheet.row([r[c] for c in workflow_db.EXPORT_COLUMNS]))
        await response.write(buf.getvalue().encode())
        buf.seek(0)
        buf.truncate()
        if len(rows) < 2000:
            break
        after = (rows[-1]["created_at"], rows[-1]["kind"], rows[-1]["id"])
    await response.write_eof()
    return response
