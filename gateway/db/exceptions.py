"""The exception workflow in the database: reconciliation items (the exception
categories, not the matched lines) and payment reviews, listed together and acted on
one at a time, each step audited.

Lists are oldest first in keyset pages on (created_at, kind, id): each kind is read on
its own partial index (idx_recon_items_unresolved / idx_recon_items_exceptions,
idx_payment_reviews_queue / idx_payment_reviews_age) and the two ordered streams are
merged. A step locks its row (`FOR UPDATE`), checks the rules
(gateway.domain.exception_workflow), writes the new state and its audit_log row in one
transaction, so two operators acting at once are serialised and the second one is told
what the first did.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from gateway.db import keyset
from gateway.domain import exception_workflow as wf
from gateway.errors import Conflict, NotFound, ValidationError

_NOT_MATCHED = "category NOT IN ('matched', 'matched_with_fee')"
# A later run's sighting of an open item (sql/140) is not an exception of its own.
_OPEN_ITEM = f"{_NOT_MATCHED} AND open_item_id IS NULL"

_ITEM_COLUMNS = f"""
'{wf.ITEM}'::text AS kind, id, created_at, reference_number, category, run_id, payment_id,
statement_amount, internal_amount, difference, statement_status, internal_status,
NULL::text AS provider_status, NULL::integer AS occurrences, state, assignee, assigned_at,
resolution, resolution_note, resolution_payment_id, resolved_at, resolved_by, details,
open_item_id, seen_count, last_seen_run_id, last_seen_at, cleared_run_id, cleared_at
"""
_REVIEW_COLUMNS = f"""
'{wf.REVIEW}'::text AS kind, id, created_at, reference_number, reason AS category,
NULL::uuid AS run_id, payment_id, NULL::numeric AS statement_amount,
NULL::numeric AS internal_amount, NULL::numeric AS difference,
NULL::text AS statement_status, internal_status, provider_status, occurrences, state,
assignee, assigned_at, resolution, resolution_note, resolution_payment_id, resolved_at,
resolved_by, details, NULL::bigint AS open_item_id, occurrences AS seen_count,
NULL::uuid AS last_seen_run_id, last_seen_at, NULL::uuid AS cleared_run_id,
NULL::timestamptz AS cleared_at
"""
EXPORT_COLUMNS = (
    "kind", "id", "created_at", "reference_number", "category", "run_id", "payment_id",
    "statement_amount", "internal_amount", "difference", "statement_status",
    "internal_status", "provider_status", "occurrences", "state", "assignee", "assigned_at",
    "resolution", "resolution_note", "resolution_payment_id", "resolved_at", "resolved_by",
)  # fmt: skip
_TABLES = {wf.ITEM: "reconciliation_items", wf.REVIEW: "payment_reviews"}


@dataclass(frozen=True)
class ExceptionFilter:
    state: str = wf.UNRESOLVED  # one of wf.STATE_FILTERS
    kind: str | None = None
    category: str | None = None  # an item's category or a review's reason
    run_id: uuid.UUID | None = None
    reference_number: str | None = None
    assignee: str | None = None
    min_amount: Decimal | None = None  # |difference| (or the one amount known) at least this
    created_before: datetime | None = None  # age: created at or before this time


Cursor = tuple[datetime, str, int]


def list_sql(
    f: ExceptionFilter, after: Cursor | None, limit: int, *, newest_first: bool = False
) -> tuple[str, list[Any]]:
    """One page, oldest first past `after`; `newest_first` walks back from it instead."""
    params = keyset.Params()
    arg = params.add
    branches = []
    kinds = [k for k in wf.KINDS if f.kind in (None, k)]
    if f.run_id is not None or f.min_amount is not None:
        kinds = [k for k in kinds if k == wf.ITEM]  # reviews have no run and no amount
    for kind in kinds:
        where = _state_where(kind, f.state)
        if f.category is not None:
            where.append(f"{'category' if kind == wf.ITEM else 'reason'} = {arg(f.category)}")
        if f.reference_number is not None:
            where.append(f"reference_number = {arg(f.reference_number)}")
        if f.assignee is not None:  # IS NOT NULL: the partial index's predicate, spelled out
            where.append(f"assignee = {arg(f.assignee)} AND assignee IS NOT NULL")
        if f.created_before is not None:
            where.append(f"created_at <= {arg(f.created_before)}")
        if kind == wf.ITEM:
            if f.run_id is not None:
                where.append(f"run_id = {arg(f.run_id)}")
            if f.min_amount is not None:
                where.append(
                    "abs(coalesce(difference, statement_amount, internal_amount)) >= "
                    + arg(f.min_amount)
                )
        if after is not None:
            at, after_kind, after_id = after
            # Rows of a kind sorting before the cursor's (after it, walking back) at the
            # cursor's very time are past it; the others only from the next instant.
            before = kind < after_kind if not newest_first else kind > after_kind
            strictly, loosely = (">", ">=") if not newest_first else ("<", "<=")
            if kind == after_kind:
                a = arg(at)
                where.append(keyset.after("created_at", a, arg(after_id),
                                          ascending=not newest_first))  # fmt: skip
            else:
                where.append(f"created_at {strictly if before else loosely} {arg(at)}")
        columns = _ITEM_COLUMNS if kind == wf.ITEM else _REVIEW_COLUMNS
        order = "created_at DESC, id DESC" if newest_first else "created_at, id"
        branches.append(
            f"(SELECT {columns} FROM payment_service.{_TABLES[kind]}"
            f" WHERE {' AND '.join(where)} ORDER BY {order} LIMIT {arg(limit)})"
        )
    if not branches:
        return "SELECT NULL LIMIT 0", []
    order = "created_at DESC, kind DESC, id DESC" if newest_first else "created_at, kind, id"
    sql = (
        "SELECT * FROM (" + " UNION ALL ".join(branches) + ") x"
        f" ORDER BY {order} LIMIT {arg(limit)}"
    )
    return sql, params.values


def _state_where(kind: str, state: str) -> list[str]:
    """The state filter, written to match each partial index's predicate literally."""
    if state not in wf.STATE_FILTERS:
        raise ValueError(f"unknown state {state!r}")
    if kind == wf.ITEM:
        where = [_OPEN_ITEM]
        if state in (wf.UNRESOLVED, wf.OPEN, wf.ASSIGNED):
            where.append("state <> 'resolved'")
        if state in wf.STATES:
            where.append(f"state = '{state}'")
        return where
    if state in (wf.UNRESOLVED, wf.OPEN, wf.ASSIGNED):
        where = ["resolved_at IS NULL"]
        if state != wf.UNRESOLVED:
            where.append(f"state = '{state}'")
        return where
    if state == wf.RESOLVED:
        return ["resolved_at IS NOT NULL"]
    return ["TRUE"]


async def list_exceptions(
    pool: asyncpg.Pool,
    f: ExceptionFilter,
    after: Cursor | None,
    limit: int,
    *,
    newest_first: bool = False,
) -> list[asyncpg.Record]:
    sql, args = list_sql(f, after, limit, newest_first=newest_first)
    return await pool.fetch(sql, *args)


# -- one exception -------------------------------------------------------------------------


def _select_one(kind: str, *, lock: bool) -> str:
    columns = _ITEM_COLUMNS if kind == wf.ITEM else _REVIEW_COLUMNS
    extra = f" AND {_NOT_MATCHED}" if kind == wf.ITEM else ""
    return f"SELECT {columns} FROM payment_service.{_TABLES[kind]} WHERE id = $1{extra}" + (
        " FOR UPDATE" if lock else ""
    )


_COMMENTS = """
SELECT id, actor, body, created_at FROM payment_service.exception_comments
WHERE kind = $1 AND item_id = $2 ORDER BY id
"""
_TRAIL = """
SELECT id, created_at, actor, action, details FROM payment_service.audit_log
WHERE (payment_id = $4 OR (payment_id IS NULL AND reference_number = $1))
  AND action LIKE 'exception\\_%'
  AND details->>'kind' = $2 AND (details->>'id')::bigint = $3
ORDER BY created_at, id
"""
_AUDIT = """
INSERT INTO payment_service.audit_log (actor, action, reference_number, payment_id, details)
VALUES ($1, $2, $3, $4, $5)
"""


async def get_exception(pool: asyncpg.Pool, kind: str, item_id: int) -> dict[str, Any] | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(_select_one(kind, lock=False), item_id)
        if row is None:
            return None
        comments = await conn.fetch(_COMMENTS, kind, item_id)
        trail = await conn.fetch(_TRAIL, row["reference_number"], kind, item_id, row["payment_id"])
    return {"exception": dict(row), "comments": [dict(c) for c in comments],
            "audit": [dict(t) for t in trail]}  # fmt: skip


async def _locked(conn: asyncpg.Connection, kind: str, item_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(_select_one(kind, lock=True), item_id)
    if row is None:
        raise NotFound(f"no such exception: {kind} {item_id}", code="exception_not_found")
    if row["open_item_id"] is not None:
        raise Conflict(
            f"a later sighting of exception item {row['open_item_id']}: act on that one",
            code="sighting_of_open_item",
        )
    return row


def _unresolved(row: asyncpg.Record) -> None:
    if row["state"] == wf.RESOLVED:
        raise Conflict(
            f"already resolved ({row['resolution']}) by {row['resolved_by']}",
            code="already_resolved",
        )


async def _audit(
    conn: asyncpg.Connection, actor: str, action: str, row: asyncpg.Record, **details: Any
) -> None:
    body = {"kind": row["kind"], "id": row["id"], "category": row["category"], **details}
    if row["run_id"] is not None:
        body["run_id"] = str(row["run_id"])
    payment_id = row["payment_id"]
    await conn.execute(_AUDIT, actor[:255], action, row["reference_number"], payment_id, body)


async def assign(
    pool: asyncpg.Pool, kind: str, item_id: int, name: str, *, actor: str
) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction():
        row = await _locked(conn, kind, item_id)
        _unresolved(row)
        await conn.execute(
            f"UPDATE payment_service.{_TABLES[kind]}"
            " SET state = 'assigned', assignee = $2, assigned_at = now() WHERE id = $1",
            item_id, name,
        )  # fmt: skip
        await _audit(conn, actor, "exception_assigned", row, assignee=name,
                     previous_assignee=row["assignee"], previous_state=row["state"])  # fmt: skip
        return dict(await conn.fetchrow(_select_one(kind, lock=False), item_id))


async def resolve(
    pool: asyncpg.Pool, kind: str, item_id: int, resolution: wf.Resolution, *, actor: str
) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction():
        row = await _locked(conn, kind, item_id)
        _unresolved(row)
        if resolution.payment_id is not None:
            found = await conn.fetchval(
                "SELECT reference_number FROM payment_service.payments WHERE id = $1 LIMIT 1",
                resolution.payment_id,
            )
            if found is None:
                raise ValidationError("payment_id", "no payment has this id")
        await conn.execute(
            f"UPDATE payment_service.{_TABLES[kind]}"
            " SET state = 'resolved', resolution = $2, resolution_note = $3,"
            " resolution_payment_id = $4, resolved_at = now(), resolved_by = $5 WHERE id = $1",
            item_id, resolution.code, resolution.note, resolution.payment_id, actor[:255],
        )  # fmt: skip
        await _audit(
            conn, actor, "exception_resolved", row, resolution=resolution.code,
            note=resolution.note,
            payment_id=str(resolution.payment_id) if resolution.payment_id else None,
            previous_state=row["state"],
        )  # fmt: skip
        return dict(await conn.fetchrow(_select_one(kind, lock=False), item_id))


async def add_comment(
    pool: asyncpg.Pool, kind: str, item_id: int, body: str, *, actor: str
) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction():
        row = await _locked(conn, kind, item_id)
        comment = await conn.fetchrow(
            "INSERT INTO payment_service.exception_comments (kind, item_id, actor, body)"
            " VALUES ($1, $2, $3, $4) RETURNING id, actor, body, created_at",
            kind, item_id, actor[:255], body,
        )  # fmt: skip
        assert comment is not None
        await _audit(conn, actor, "exception_comment", row, comment_id=comment["id"], body=body)
        return dict(comment)


async def accept_suggestion(pool: asyncpg.Pool, item_id: int, *, actor: str) -> dict[str, Any]:
    """Accept the match reconciliation suggested for a line whose reference differs from a
    payment's only in letter case: both items of the pair (the line's `missing_internal`
    and the payment's `missing_in_statement`) are resolved `matched_manually` with that
    payment, each step audited."""
    async with pool.acquire() as conn, conn.transaction():
        row = await _locked(conn, wf.ITEM, item_id)
        _unresolved(row)
        details = row["details"] or {}
        other_id = details.get("suggested_item_id")
        if details.get("suggestion") is None or not isinstance(other_id, int):
            raise Conflict("this exception has no suggested match", code="no_suggestion")
        other = await conn.fetchrow(_select_one(wf.ITEM, lock=True), other_id)
        pair = [row] + ([other] if other is not None and other["state"] != wf.RESOLVED else [])
        payment_id = row["payment_id"] or (other["payment_id"] if other is not None else None)
        if payment_id is None:
            raise Conflict("the suggested payment is gone", code="no_suggestion")
        note = (
            f"suggested match accepted: {details.get('suggested_reference')!s:.255} differs"
            f" from {row['reference_number']} only in letter case"
        )
        for r in pair:
            await conn.execute(
                "UPDATE payment_service.reconciliation_items SET state = 'resolved',"
                " resolution = 'matched_manually', resolution_note = $2,"
                " resolution_payment_id = $3, resolved_at = now(), resolved_by = $4"
                " WHERE id = $1",
                r["id"], note, payment_id, actor[:255],
            )  # fmt: skip
            await _audit(conn, actor, "exception_resolved", r, resolution="matched_manually",
                         note=note, payment_id=str(payment_id), suggestion=details["suggestion"],
                         previous_state=r["state"])  # fmt: skip
        return dict(await conn.fetchrow(_select_one(wf.ITEM, lock=False), item_id))


@dataclass(frozen=True, slots=True)
class Target:
    kind: str
    id: int


async def bulk(
    pool: asyncpg.Pool,
    targets: Sequence[Target],
    action: str,
    *,
    actor: str,
    name: str | None = None,
    resolution: wf.Resolution | None = None,
    body: str | None = None,
) -> list[dict[str, Any]]:
    """The same step on many exceptions, each in its own transaction: one that cannot take
    it (resolved already, unknown) is reported and does not stop the others."""
    results: list[dict[str, Any]] = []
    for t in targets:
        try:
            if action == "assign":
                assert name is not None
                await assign(pool, t.kind, t.id, name, actor=actor)
            elif action == "resolve":
                assert resolution is not None
                await resolve(pool, t.kind, t.id, resolution, actor=actor)
            else:
                assert body is not None
                await add_comment(pool, t.kind, t.id, body, actor=actor)
        except (NotFound, Conflict, ValidationError) as exc:
            results.append({"kind": t.kind, "id": t.id, "ok": False, "error": exc.code,
                            "detail": exc.detail})  # fmt: skip
        else:
            results.append({"kind": t.kind, "id": t.id, "ok": True})
    return results
