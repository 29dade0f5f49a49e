"""One payment and everything that touched it: the ops API's payment page.

Each part is read on its own index: webhook_events and audit_log by payment id (and by
reference among the rows of no payment: sql/171), the outbox
(payment_service.outbox_events_of, on idx_outbox_key and idx_outbox_dead),
reconciliation_items (idx_recon_items_reference) and payment_reviews
(idx_payment_reviews_reference). A payment by id reads each monthly partition's primary
key (its leading column is the id).

Events: an event still in the event log past its lane's cursor, or in the outbox (a
retry, a dead letter), is pending (or dead-lettered); any other was published. A
payment.recorded event's id is derived from the payment id, so it is found exactly;
status-change events are matched to their audit rows by old and new status, in order.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson

from gateway.db.events_sql import recorded_event_id_sql
from gateway.db.payment_search import COLUMNS, reference_equals
from gateway.domain.events import PAYMENT_RECORDED, PAYMENT_STATUS_CHANGED

PART_LIMIT = 500  # rows per part: a payment with more shows the first ones

_BY_ID = f"SELECT {COLUMNS}, metadata FROM payment_service.payments WHERE id = $1 LIMIT 1"
_BY_REFERENCE = f"""
SELECT {COLUMNS}, metadata FROM payment_service.payments
WHERE {reference_equals("reference_number", "$1")} ORDER BY created_at DESC LIMIT 1
"""
_DELIVERIES = f"""
SELECT id, received_at, channel, delivery_id, payment_id, outcome,
       octet_length(body) AS size, error
FROM payment_service.webhook_events
WHERE payment_id = $2 OR (payment_id IS NULL AND reference_number = $1)
ORDER BY received_at, id LIMIT {PART_LIMIT}
"""
_AUDIT = f"""
SELECT id, created_at, actor, action, payment_id, details
FROM payment_service.audit_log
WHERE payment_id = $2 OR (payment_id IS NULL AND reference_number = $1)
ORDER BY created_at, id LIMIT {PART_LIMIT}
"""
_RECORDED_ID = f"SELECT {recorded_event_id_sql('$1::uuid')}"
# Waiting in the outbox (retries, dead letters), or still in the event log past the
# cursor of the payment's lane: its stored events by key, its recorded event by id.
_OUTBOX = f"""
SELECT * FROM (SELECT * FROM payment_service.outbox_events_of($1) ORDER BY id) o
UNION ALL
SELECT NULL, CASE WHEN e.payment_ids IS NULL THEN e.event_id
                 ELSE {recorded_event_id_sql("$2::uuid")} END,
       e.event_type, 0, NULL, NULL, e.created_at, e.payload
FROM payment_service.event_log_unpublished({PART_LIMIT},
                                           payment_service.event_lane($1)) e
WHERE e.key = $1 OR $2 = ANY (e.payment_ids)
"""
_RECONCILIATION = f"""
SELECT i.id, i.run_id, i.category, i.statement_amount, i.internal_amount, i.difference,
       i.statement_status, i.internal_status, i.state, i.assignee, i.resolution,
       i.created_at, i.seen_count, r.source AS run_source
FROM payment_service.reconciliation_items i
JOIN payment_service.reconciliation_runs r ON r.id = i.run_id
-- A later run's sighting of an open item is that item again (it counts them): not a new entry.
WHERE i.reference_number = $1 AND i.open_item_id IS NULL ORDER BY i.id LIMIT {PART_LIMIT}
"""
_REVIEWS = f"""
SELECT id, source, reason, internal_status, provider_status, occurrences, state, assignee,
       resolution, created_at, last_seen_at, resolved_at
FROM payment_service.payment_reviews WHERE reference_number = $1 ORDER BY id LIMIT {PART_LIMIT}
"""


async def find_payment(pool: asyncpg.Pool, key: str) -> asyncpg.Record | None:
    """A payment by its id or, failing that, its reference (the newest, should a reference
    have been recorded again after its reference row was pruned)."""
    try:
        payment_id = uuid.UUID(key)
    except ValueError:
        payment_id = None
    if payment_id is not None:
        row = await pool.fetchrow(_BY_ID, payment_id)
        if row is not None:
            return row
    return await pool.fetchrow(_BY_REFERENCE, key[:255])


async def timeline_parts(pool: asyncpg.Pool, payment: asyncpg.Record) -> dict[str, Any]:
    ref = payment["reference_number"]
    async with pool.acquire() as conn:
        deliveries = await conn.fetch(_DELIVERIES, ref, payment["id"])
        audit = await conn.fetch(_AUDIT, ref, payment["id"])
        recorded_id = await conn.fetchval(_RECORDED_ID, payment["id"])
        outbox = await conn.fetch(_OUTBOX, ref, payment["id"])
        items = await conn.fetch(_RECONCILIATION, ref)
        reviews = await conn.fetch(_REVIEWS, ref)
    return {
        "deliveries": [dict(r) for r in deliveries],
        "audit": [dict(r) for r in audit],
        "events": events_of(payment, audit, outbox, recorded_id),
        "reconciliation": [dict(r) for r in items],
        "reviews": [dict(r) for r in reviews],
    }


def events_of(
    payment: Any, audit: list[Any], outbox: list[Any], recorded_id: uuid.UUID
) -> list[dict[str, Any]]:
    """The payment's events with their state: pending, dead_lettered or published."""
    waiting = {r["event_id"]: r for r in outbox}
    created = next((a for a in audit if a["action"] == "created"), None)
    out = [
        _event(
            recorded_id, PAYMENT_RECORDED, waiting.pop(recorded_id, None),
            at=created["created_at"] if created else payment["created_at"],
        )
    ]  # fmt: skip
    changes = [r for r in waiting.values() if r["event_type"] == PAYMENT_STATUS_CHANGED]
    for a in audit:
        if a["action"] != "status_change":
            continue
        details = a["details"] or {}
        match = next((r for r in changes if _same_change(r, details)), None)
        if match is not None:
            changes.remove(match)
            waiting.pop(match["event_id"], None)
        event_id = match["event_id"] if match is not None else None
        out.append(
            _event(event_id, PAYMENT_STATUS_CHANGED, match, at=a["created_at"],
                   change={"old": details.get("old"), "new": details.get("new")})
        )  # fmt: skip
    for r in waiting.values():  # anything else still queued under this key
        out.append(_event(r["event_id"], r["event_type"], r, at=r["created_at"]))
    return out


def _same_change(row: Any, details: dict[str, Any]) -> bool:
    try:
        payload = orjson.loads(row["payload"])
    except orjson.JSONDecodeError:
        return False
    return bool(
        payload.get("old_status") == details.get("old")
        and payload.get("new_status") == details.get("new")
    )


def _event(
    event_id: uuid.UUID | None,
    event_type: str,
    row: Any,
    *,
    at: Any,
    change: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if row is None:
        state = "published"
    elif row["dead_lettered_at"] is not None:
        state = "dead_lettered"
    else:
        state = "pending"
    out: dict[str, Any] = {
        "event_id": str(event_id) if event_id is not None else None,
        "event_type": event_type,
        "state": state,
        "at": at,
        "attempts": row["attempts"] if row is not None else None,
        "last_error": row["last_error"] if row is not None else None,
        "outbox_id": row["id"] if row is not None else None,
    }
    if change is not None:
        out["change"] = change
    return out


def merged(parts: dict[str, Any]) -> list[dict[str, Any]]:
    """Every part as one list in time order: what an operator reads top to bottom."""
    entries: list[dict[str, Any]] = []
    for d in parts["deliveries"]:
        entries.append({"at": d["received_at"], "kind": "delivery", "what": d["outcome"],
                        "channel": d["channel"], "delivery_id": d["id"]})  # fmt: skip
    for a in parts["audit"]:
        entries.append({"at": a["created_at"], "kind": "audit", "what": a["action"],
                        "actor": a["actor"], "details": a["details"]})  # fmt: skip
    for e in parts["events"]:
        entries.append({"at": e["at"], "kind": "event", "what": e["event_type"],
                        "state": e["state"], "event_id": e["event_id"]})  # fmt: skip
    for i in parts["reconciliation"]:
        entries.append({"at": i["created_at"], "kind": "reconciliation", "what": i["category"],
                        "state": i["state"], "item_id": i["id"]})  # fmt: skip
    for r in parts["reviews"]:
        entries.append({"at": r["created_at"], "kind": "review", "what": r["reason"],
                        "state": r["state"], "review_id": r["id"]})  # fmt: skip
    order = {"delivery": 0, "audit": 1, "event": 2, "reconciliation": 3, "review": 4}
    entries.sort(key=lambda e: (e["at"], order[e["kind"]]))
    return entries
