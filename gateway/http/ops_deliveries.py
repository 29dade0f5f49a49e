"""Stored deliveries: what each provider actually sent, and replaying it.

    GET  /api/v1/deliveries                 channel, outcome, reference_number, from, to,
                                            limit, cursor (newest first)
    GET  /api/v1/deliveries/{id}            the raw body (pretty-printed when it is JSON),
                                            its outcome and every replay of it
    POST /api/v1/deliveries/{id}/replay     run the stored bytes through today's pipeline
    POST /api/v1/deliveries/replay          the same for every delivery a filter matches
                                            (oldest first, `limit` at a time), or with
                                            "dry_run": true what each replay would do

A replay never checks the signature (the bytes were verified when they arrived) and never
records a payment twice (gateway.ingest.replay).
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from aiohttp import web

from gateway import appkeys
from gateway.db import deliveries
from gateway.domain import cursors
from gateway.errors import NotFound, PaygateError, ValidationError
from gateway.http import ops_query as q
from gateway.ingest import replay

BULK_DEFAULT = 100
BULK_MAX = 1000


def delivery_filter(query: q.Query) -> deliveries.DeliveryFilter:
    since, until = q.time_range(query)
    return deliveries.DeliveryFilter(
        channel=q.text(query, "channel", 100),
        outcome=q.choice(query, "outcome", deliveries.OUTCOMES),
        reference_number=q.text(query, "reference_number"),
        since=since,
        until=until,
    )


async def list_page(request: web.Request) -> dict[str, Any]:
    query = request.query
    f = delivery_filter(query)
    page = q.limit(query)
    after = q.cursor(query, (datetime, int))
    rows = await deliveries.list_deliveries(
        request.app[appkeys.POOL], f, (after[0], after[1]) if after else None, page
    )
    items = q.records(rows)
    return {"items": items, "next_cursor": q.next_cursor(items, page, "received_at", "id")}


async def list_deliveries(request: web.Request) -> web.Response:
    return q.answer(await list_page(request))


def delivery_id(request: web.Request) -> int:
    return q.path_int(request, "delivery_id", "delivery_not_found")


async def delivery_detail(request: web.Request, ident: int) -> dict[str, Any]:
    pool = request.app[appkeys.POOL]
    row = await deliveries.get_delivery(pool, ident)
    if row is None:
        raise NotFound("no such stored delivery", code="delivery_not_found")
    out = dict(row)
    out["body"] = render_body(bytes(row["body"]))
    return {"delivery": out, "replays": q.records(await deliveries.replays_of(pool, ident))}


async def get_delivery(request: web.Request) -> web.Response:
    return q.answer(await delivery_detail(request, delivery_id(request)))


async def replay_one(request: web.Request, ident: int) -> dict[str, Any]:
    app = request.app
    result = await replay.replay(
        app[appkeys.POOL], app[appkeys.PIPELINE], app[appkeys.CHANNELS], ident,
        actor=q.actor(request),
    )  # fmt: skip
    app[appkeys.OUTBOX_WAKE].ring()
    return {
        "delivery_id": result.delivery_id,
        "replay_id": result.replay_id,
        "status": result.status,
        "outcome": result.outcome,
        "answer": result.body,
    }


async def post_replay(request: web.Request) -> web.Response:
    return q.answer(await replay_one(request, delivery_id(request)))


def bulk_filter(doc: dict[str, Any]) -> tuple[deliveries.DeliveryFilter, int, bool, Any]:
    """The filter, page size, dry-run flag and cursor of a bulk replay body."""
    unknown = set(doc) - {
        "channel", "outcome", "reference_number", "from", "to", "limit", "dry_run", "cursor",
    }  # fmt: skip
    if unknown:
        raise ValidationError(sorted(unknown)[0], "unknown field")

    def text(name: str, maximum: int = 255) -> str | None:
        value = doc.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value or len(value) > maximum or "\x00" in value:
            raise ValidationError(name, f"must be a string of 1 to {maximum} characters")
        return value

    outcome = text("outcome", 32)
    if outcome is not None and outcome not in deliveries.OUTCOMES:
        raise ValidationError("outcome", "must be one of " + ", ".join(deliveries.OUTCOMES))
    times = {}
    for name in ("from", "to"):
        raw = text(name, 64)
        times[name] = q.parse_instant(raw, name) if raw is not None else None
    if times["from"] and times["to"] and times["to"] <= times["from"]:
        raise ValidationError("to", "must be later than from")
    f = deliveries.DeliveryFilter(
        channel=text("channel", 100), outcome=outcome,
        reference_number=text("reference_number"), since=times["from"], until=times["to"],
    )  # fmt: skip
    if f == deliveries.DeliveryFilter():
        raise ValidationError(
            "outcome", "give at least one of channel, outcome, reference_number, from"
        )
    limit = doc.get("limit", BULK_DEFAULT)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= BULK_MAX:
        raise ValidationError("limit", f"must be an integer from 1 to {BULK_MAX}")
    dry_run = doc.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ValidationError("dry_run", "must be true or false")
    raw_cursor = text("cursor", 512)
    after = cursors.decode(raw_cursor, (datetime, int)) if raw_cursor else None
    return f, limit, dry_run, after


async def bulk_replay(request: web.Request, doc: dict[str, Any]) -> dict[str, Any]:
    f, page, dry_run, after = bulk_filter(doc)
    app = request.app
    pool = app[appkeys.POOL]
    rows = await deliveries.list_deliveries(pool, f, after, page, oldest_first=True)
    results: list[dict[str, Any]] = []
    stopped: dict[str, Any] | None = None
    done = 0
    for row in rows:
        if dry_run:
            full = await deliveries.get_delivery(pool, row["id"])
            if full is None:
                continue
            prediction = await replay.predict(
                pool, app[appkeys.CHANNELS], app[appkeys.SETTINGS], full
            )
            results.append({"delivery_id": row["id"], "outcome": row["outcome"], **prediction})
        else:
            try:
                results.append(await replay_one(request, row["id"]))
            except PaygateError as exc:  # 503: stop here; the cursor resumes at this delivery
                stopped = {"delivery_id": row["id"], **exc.body()}
                break
        done += 1
    last = rows[done - 1] if done else None
    more = stopped is not None or len(rows) == page
    next_cursor = (
        cursors.encode(last["received_at"], last["id"]) if more and last is not None else None
    )
    if stopped is not None and last is None and after is not None:
        next_cursor = cursors.encode(*after)
    return {
        "dry_run": dry_run,
        "count": len(results),
        "results": results,
        "stopped": stopped,
        "next_cursor": next_cursor,
    }


async def post_bulk_replay(request: web.Request) -> web.Response:
    return q.answer(await bulk_replay(request, await q.json_object(request)))


def render_body(raw: bytes) -> dict[str, Any]:
    """The stored bytes for a reader: pretty JSON (numbers exactly as sent), else the text,
    else base64. `raw` is always the exact text when the bytes are UTF-8; `pretty` is None
    for a document nested deeper than PRETTY_MAX_DEPTH (it was recorded: only the view of
    it falls back to the raw text)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"encoding": "base64", "raw": base64.b64encode(raw).decode(), "pretty": None}
    try:
        doc = json.loads(text, parse_float=Decimal, object_pairs_hook=_Pairs)
    except (ValueError, RecursionError):
        return {"encoding": "text", "raw": text, "pretty": None}
    try:
        pretty = _pretty(doc, 0)
    except _TooDeep:  # a body nested past PRETTY_MAX_DEPTH is shown as it came
        pretty = None
    return {"encoding": "json", "raw": text, "pretty": pretty}


PRETTY_MAX_DEPTH = 64  # far below the recursion limit, far above any provider's payload


class _TooDeep(Exception):
    pass


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its pairs, in order, duplicates and all."""


def _pretty(value: Any, depth: int) -> str:
    if depth > PRETTY_MAX_DEPTH:
        raise _TooDeep
    pad, inner = "  " * depth, "  " * (depth + 1)
    if isinstance(value, _Pairs):
        if not value:
            return "{}"
        items = (f"{inner}{json.dumps(k)}: {_pretty(v, depth + 1)}" for k, v in value)
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(inner + _pretty(v, depth + 1) for v in value) + f"\n{pad}]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=False)
