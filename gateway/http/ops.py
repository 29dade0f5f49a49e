"""Operator endpoints: statement reconciliation and the outbox dead-letter queue.

    POST /api/v1/reconciliation/statements   CSV body, streamed; query parameters:
         delimiter (one character or "tab"), map (reference_number=ref,amount=amt,...),
         date_format (strptime), period_start / period_end (YYYY-MM-DD, inclusive),
         tolerance, fee_percent, fee_fixed (decimals), keep_matched (true|false), source,
         provider, date_tolerance_days. 201 with the run; 200 with the earlier run when the
         same statement was imported already; 413/408 past the upload's limits
    GET  /api/v1/reconciliation/runs/{id}    summary and items; category, limit, after
         (item id cursor); format=csv streams every item (of the category) as CSV
    GET  /api/v1/dlq?limit=                  dead-lettered outbox rows
    POST /api/v1/dlq/replay                  {"ids": [...]} or {"all": true}

Authentication is a request gate (gateway.security.auth); it leaves the caller in
`request[PRINCIPAL]`, which is what the audit trail records as the actor.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from aiohttp import web

from gateway import appkeys
from gateway.db import dead_letters
from gateway.db.reconciliation import ITEM_COLUMNS, reconcile_statement, run_items
from gateway.db.reconciliation import get_run as reconciliation_run
from gateway.domain import spreadsheet
from gateway.domain.statements import (
    CATEGORIES,
    StatementError,
    StatementOptions,
    parse_delimiter,
    parse_mapping,
)
from gateway.errors import BadRequest, NotFound, ValidationError
from gateway.http.context import json_response
from gateway.http.statement_upload import (
    UploadLimits,
    check_declared_size,
    request_chunks,
    spool,
)
from gateway.security.auth import PRINCIPAL


def _actor(request: web.Request) -> str:
    return request[PRINCIPAL].subject if PRINCIPAL in request else "anonymous"


def _decimal(values: Mapping[str, str], name: str) -> Decimal:
    raw = values.get(name, "0")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ValidationError(name, "must be a decimal number") from None
    if not value.is_finite() or value < 0:
        raise ValidationError(name, "must be a finite number >= 0")
    return value


def _day(values: Mapping[str, str], name: str) -> date | None:
    raw = values.get(name)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ValidationError(name, "must be a date YYYY-MM-DD") from None


def statement_options(
    values: Mapping[str, str],
    *,
    default_tolerance: Decimal,
    default_source: str | None = None,
    default_date_tolerance: int = 3,
) -> StatementOptions:
    """The options of a statement import (the CSV options of `paygate reconcile`), from the
    API's query string or the console's form: one set of rules and messages for both."""
    try:
        delimiter = parse_delimiter(values.get("delimiter", ","))
    except ValueError as exc:
        raise ValidationError("delimiter", str(exc)) from None
    try:
        mapping = parse_mapping(values.get("map", ""))
    except ValueError as exc:
        raise ValidationError("map", str(exc)) from None
    keep = values.get("keep_matched", "true").lower()
    if keep not in ("true", "false", "1", "0"):
        raise ValidationError("keep_matched", "must be true or false")
    start, end = _day(values, "period_start"), _day(values, "period_end")
    if (start is None) != (end is None) or (start and end and start > end):
        raise ValidationError("period_start", "give both period_start and period_end, in order")
    days = values.get("date_tolerance_days")
    if days is not None and (not days.isdigit() or int(days) > 366):
        raise ValidationError("date_tolerance_days", "must be a whole number of days, 0-366")
    provider = (values.get("provider") or "").strip() or None
    if provider is not None and (len(provider) > 100 or not provider.isprintable()):
        raise ValidationError("provider", "at most 100 printable characters")
    return StatementOptions(
        delimiter=delimiter,
        mapping=mapping,
        date_format=values.get("date_format") or None,
        period_start=start,
        period_end=end,
        tolerance=_decimal(values, "tolerance") if "tolerance" in values else default_tolerance,
        fee_percent=_decimal(values, "fee_percent"),
        fee_fixed=_decimal(values, "fee_fixed"),
        keep_matched=keep in ("true", "1"),
        source=(values.get("source") or default_source or "")[:500] or None,
        provider=provider,
        date_tolerance_days=default_date_tolerance if days is None else int(days),
    )


async def post_statement(request: web.Request) -> web.Response:
    settings = request.app[appkeys.SETTINGS]
    options = statement_options(
        request.query,
        default_tolerance=settings.reconcile_amount_tolerance,
        default_date_tolerance=settings.reconcile_date_tolerance_days,
    )
    limits = UploadLimits.of(settings)
    check_declared_size(request, limits)
    statement = await spool(request_chunks(request), limits)
    try:
        imported = await reconcile_statement(
            request.app[appkeys.POOL], statement, options,
            topic=settings.kafka_topic, actor=_actor(request),
        )  # fmt: skip
    except StatementError as exc:
        raise ValidationError("statement", str(exc)) from None
    finally:
        statement.close()
    if not imported.created:
        return json_response(imported.summary, 200)
    request.app[appkeys.OUTBOX_WAKE].ring()
    return json_response(imported.summary, 201)


def _run_id(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["run_id"])
    except ValueError:
        raise NotFound("no such reconciliation run", code="run_not_found") from None


def _item(row: Any) -> dict[str, Any]:
    out = dict(row)
    for key in ("statement_amount", "internal_amount", "difference"):
        if out[key] is not None:
            out[key] = str(out[key])
    if out["payment_id"] is not None:
        out["payment_id"] = str(out["payment_id"])
    return out


async def get_run(request: web.Request) -> web.StreamResponse:
    run_id = _run_id(request)
    pool = request.app[appkeys.POOL]
    run = await reconciliation_run(pool, run_id)
    if run is None:
        raise NotFound("no such reconciliation run", code="run_not_found")
    category = request.query.get("category") or None
    if category is not None and category not in CATEGORIES:
        raise ValidationError("category", "must be one of " + ", ".join(CATEGORIES))
    if request.query.get("format") == "csv":
        return await _export_csv(request, run_id, category)
    try:
        limit = min(max(int(request.query.get("limit", "100")), 1), 1000)
        after = int(request.query.get("after", "0"))
    except ValueError:
        raise BadRequest("limit and after must be integers") from None
    rows = await run_items(pool, run_id, category, after, limit)
    items = [_item(r) for r in rows]
    body = {
        "run": {
            "id": str(run["id"]),
            "kind": run["kind"],
            "source": run["source"],
            "actor": run["actor"],
            "status": run["status"],
            "period_start": run["period_start"].date().isoformat() if run["period_start"] else None,
            "period_end": run["period_end"].date().isoformat() if run["period_end"] else None,
            "total_lines": run["total_lines"],
            "malformed_lines": run["malformed_lines"],
            "summary": run["summary"],
            "errors": run["errors"],
            "started_at": run["started_at"].isoformat(),
            "completed_at": run["completed_at"].isoformat() if run["completed_at"] else None,
        },
        "items": items,
        "next_after": items[-1]["id"] if len(items) == limit else None,
    }
    return json_response(body)


async def _export_csv(
    request: web.Request, run_id: uuid.UUID, category: str | None
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="reconciliation-{run_id}.csv"',
        }
    )
    await response.prepare(request)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(ITEM_COLUMNS)
    after = 0
    pool = request.app[appkeys.POOL]
    while True:
        rows = await run_items(pool, run_id, category, after, 5000)
        for r in rows:
            writer.writerow(spreadsheet.row([r[c] for c in ITEM_COLUMNS]))
        await response.write(buf.getvalue().encode())
        buf.seek(0)
        buf.truncate()
        if len(rows) < 5000:
            break
        after = rows[-1]["id"]
    await response.write_eof()
    return response


async def get_dlq(request: web.Request) -> web.Response:
    try:
        limit = min(max(int(request.query.get("limit", "100")), 1), 1000)
    except ValueError:
        raise ValidationError("limit", "must be an integer") from None
    items = await dead_letters.list_dead_letters(request.app[appkeys.POOL], limit)
    return json_response({"items": items, "count": len(items)})


_BIGINT_MAX = 2**63 - 1  # outbox ids are bigint: a larger one is bad input, not a 500


async def post_dlq_replay(request: web.Request) -> web.Response:
    try:
        doc = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        raise BadRequest("body is not valid JSON", code="invalid_json") from None
    if not isinstance(doc, dict):
        raise ValidationError("body", "must be a JSON object")
    all_ = doc.get("all") is True
    ids = doc.get("ids", [])
    if not isinstance(ids, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 < i <= _BIGINT_MAX for i in ids
    ):
        raise ValidationError("ids", "must be a list of outbox ids (positive 64-bit integers)")
    if not all_ and not ids:
        raise ValidationError("ids", "give ids or all=true")
    replayed = await dead_letters.replay(
        request.app[appkeys.POOL], ids, all_=all_, actor=_actor(request)
    )
    if replayed:
        request.app[appkeys.OUTBOX_WAKE].ring()
    return json_response({"replayed": replayed, "count": len(replayed)})
