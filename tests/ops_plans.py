"""The ops API's queries and a check that an index serves each one.

`fill` writes a bench-like volume in SQL (monthly partitions, a long tail of customers,
mostly succeeded payments, a delivery and an audit row per payment, a few refused
deliveries, reconciliation runs with exceptions, reviews, outbox rows); `plans` EXPLAINs
every query the ops API runs, built by the same functions the handlers call; `problems`
names what in a plan is not index-served: a sequential scan of a table that grows with
traffic, or a sort over more than a page's worth of rows (an ordered walk that did not
stop at the LIMIT).

tests/gateway/db/test_ops_plans.py runs it on every `make test` at a size CI can afford;
`python -m tests.ops_plans --payments 1000000` runs it on a private embedded stack at a
million payments and prints each plan (bench/RESULTS.md quotes the outcome).

Why the small run carries over: each query is either an equality lookup on a selective
key (reference, cif, account, id: the matching rows stay few as the table grows) or an
ordered walk that stops at the page size. A sequential scan's cost grows with the table;
these index paths' costs do not, so the planner's preference for them only strengthens
with volume. What the small run cannot show is a plan flip caused by a statistic that
only appears at volume; the million-payment run is there for that.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from gateway.db import deliveries, exceptions, payment_search, reconciliation, timeline
from gateway.domain import exception_workflow as wf

# Tables that grow with traffic: never read whole.
GROWING = (
    "payments", "payment_references", "webhook_events", "audit_log", "outbox",
    "reconciliation_items", "payment_reviews", "delivery_replays", "exception_comments",
    "reconciliation_runs",
)  # fmt: skip
SORT_ROWS_MAX = 1000  # a sort above this many (estimated) input rows is not a page's walk
PAGE = 50


@dataclass(frozen=True)
class Query:
    name: str
    sql: str
    args: tuple[Any, ...]
    # Text an index condition must hold: for a filter that a walk on another index could
    # also answer (reading every row to find a rare one), the index meant for it.
    index_cond: str | None = None


@dataclass(frozen=True)
class Sample:
    """Keys of rows that exist after `fill`, for the lookups."""

    payment_id: uuid.UUID
    reference: str
    cif: str
    account: str
    delivery_id: int
    run_id: uuid.UUID
    item_id: int
    now: datetime


def _fill_sql(payments: int) -> list[str]:
    n = payments
    # Tables that do not grow with payments get a floor, so that the planner's choice on
    # them means something in a small run (a seq scan of two pages is right, and proves
    # nothing about two thousand).
    refused = max(n // 50, 2_000)
    items = max(n // 20, 20_000)
    reviews = max(n // 100, 5_000)
    runs = max(n // 500, 2_000)
    outbox = max(n // 100, 5_000)
    customers = max(n // 5, 10)
    return [
        # Payment dates over the last 11 months (their partitions exist), recorded over 30 days.
        f"""
        INSERT INTO payment_service.payments
            (id, reference_number, loan_account_number, cif, amount, payment_date,
             payment_channel, source, status, created_at, status_updated_at)
        SELECT (lpad(to_hex(i), 8, '0') || '-0000-7000-8000-000000000000')::uuid,
               'REF-' || i, 'LA-' || (i * 7919 % {customers}), 'CIF-' || (i * 104729 % {customers}),
               ((i % 100000 + 1) / 100.0)::numeric(15, 2),
               date_trunc('day', now() AT TIME ZONE 'UTC') - ((i % 330) || ' days')::interval,
               (ARRAY['bank_transfer', 'card', 'wallet', 'cash'])[i % 4 + 1],
               CASE WHEN i % 10 = 0 THEN 'staging' ELSE 'webhook' END,
               CASE WHEN i % 100 < 94 THEN 'succeeded' WHEN i % 100 < 97 THEN 'pending'
                    WHEN i % 100 < 99 THEN 'failed' ELSE 'refunded' END,
               now() - make_interval(secs => ({n} - i) * 2592000.0 / {n}),
               now()
        FROM generate_series(1::bigint, {n}) i
        """,
        """
        INSERT INTO payment_service.payment_references
            (reference_number, payment_id, payment_date, payload_hash, created_at)
        SELECT reference_number, id, payment_date, decode(md5(reference_number), 'hex'), created_at
        FROM payment_service.payments
        """,
        """
        INSERT INTO payment_service.webhook_events
            (received_at, channel, delivery_id, reference_number, payment_id, outcome, body)
        SELECT created_at, 'generic', 'msg_' || reference_number, reference_number, id,
               'created', convert_to('{"reference_number":"' || reference_number || '"}', 'UTF8')
        FROM payment_service.payments WHERE source = 'webhook'
        """,
        f"""
        INSERT INTO payment_service.webhook_events
            (received_at, channel, delivery_id, reference_number, outcome, body, error)
        SELECT now() - (i || ' minutes')::interval, 'partner', 'bad_' || i, 'BAD-' || i,
               (ARRAY['invalid', 'invalid_json', 'ignored'])[i % 3 + 1], '\\x7b7d'::bytea,
               '{{"error": "validation_error"}}'::jsonb
        FROM generate_series(1, {refused}) i
        """,
        """
        INSERT INTO payment_service.audit_log
            (created_at, actor, action, reference_number, payment_id, details)
        SELECT created_at, 'webhook', 'created', reference_number, id,
               '{"source": "webhook"}'::jsonb
        FROM payment_service.payments
        """,
        f"""
        INSERT INTO payment_service.reconciliation_runs
            (id, source, status, started_at, completed_at, summary)
        SELECT (lpad(to_hex(i), 8, '0') || '-0000-4000-8000-000000000000')::uuid, 'bank-' || i,
               'completed', now() - (i || ' hours')::interval, now() - (i || ' hours')::interval,
               '{{"counts": {{}}}}'::jsonb
        FROM generate_series(1, {runs}) i
        """,
        f"""
        INSERT INTO payment_service.reconciliation_items
            (run_id, category, reference_number, statement_amount, internal_amount, difference,
             state, created_at)
        SELECT (lpad(to_hex(i % {runs} + 1), 8, '0') || '-0000-4000-8000-000000000000')::uuid,
               (ARRAY['matched', 'matched', 'matched', 'amount_mismatch', 'missing_internal',
                      'missing_in_statement', 'status_mismatch', 'matched_with_fee'])[i % 8 + 1],
               'REF-' || (i * 13 % {n} + 1), 10.00, 9.50, 0.50,
               CASE WHEN i % 5 = 0 THEN 'resolved' WHEN i % 5 = 1 THEN 'assigned' ELSE 'open' END,
               now() - ((i % {runs}) || ' hours')::interval
        FROM generate_series(1, {items}) i
        """,
        f"""
        INSERT INTO payment_service.payment_reviews
            (reference_number, source, reason, state, resolved_at, created_at)
        SELECT 'REF-' || (i * 17 % {n} + 1), 'status_poller', 'reason_' || i,
               CASE WHEN i % 3 = 0 THEN 'resolved' ELSE 'open' END,
               CASE WHEN i % 3 = 0 THEN now() END, now() - (i || ' minutes')::interval
        FROM generate_series(1, {reviews}) i
        """,
        f"""
        INSERT INTO payment_service.exception_comments (kind, item_id, actor, body)
        SELECT 'item', i, 'ops', 'looked at it' FROM generate_series(1, {items}) i
        """,
        f"""
        INSERT INTO payment_service.delivery_replays (delivery_id, actor, status, outcome, answer)
        SELECT i, 'ops', 201, 'created', '{{}}'::jsonb FROM generate_series(1, {refused}) i
        """,
        # The relay keeps up: a short pending tail and a few dead letters.
        f"""
        INSERT INTO payment_service.outbox
            (event_id, event_type, topic, key, payload, dead_lettered_at)
        SELECT gen_random_uuid(), 'payment.recorded', 'payment.events', 'REF-' || i, '\\x7b7d',
               CASE WHEN i % 50 = 0 THEN now() END
        FROM generate_series(1, {outbox}) i
        """,
    ]


async def fill(conn: asyncpg.Connection, payments: int) -> Sample:
    for statement in _fill_sql(payments):
        await conn.execute(statement)
    await conn.execute("ANALYZE")
    # A payment from the middle that came by webhook (every tenth came from staging and
    # has no delivery): the delivery lookups need a delivery that exists, or the planner
    # answers them with a constant-false Result and no index is checked.
    middle = payments // 2 + (payments // 2 % 10 == 0)
    row = await conn.fetchrow(
        "SELECT id, reference_number, cif, loan_account_number FROM payment_service.payments"
        " WHERE reference_number = $1",
        f"REF-{middle}",
    )
    assert row is not None
    delivery = await conn.fetchval(
        "SELECT id FROM payment_service.webhook_events WHERE reference_number = $1", row[1]
    )
    assert delivery is not None, f"REF-{middle} has no stored delivery"
    item = await conn.fetchrow(
        "SELECT id, run_id FROM payment_service.reconciliation_items"
        " WHERE category = 'amount_mismatch' ORDER BY id LIMIT 1"
    )
    assert item is not None
    return Sample(row["id"], row["reference_number"], row["cif"], row["loan_account_number"],
                  delivery, item["run_id"], item["id"], datetime.now(UTC))  # fmt: skip


def queries(s: Sample) -> list[Query]:
    out: list[Query] = []
    day = timedelta(days=1)

    def search(name: str, after: Any = None, ascending: bool = False, **f: Any) -> None:
        sql, args = payment_search.search_sql(
            payment_search.PaymentFilter(**f), after, PAGE, ascending=ascending
        )
        cond = None
        if f.get("reference_prefix"):
            cond = "lower((reference_number)::text) ~>=~"
        elif f.get("reference_number"):
            cond = "lower((reference_number)::text) = "  # sql/174: the one index
        out.append(Query(f"payments: {name}", sql, tuple(args), cond))

    search("newest")
    search("next page", after=(s.now - 3 * day, s.payment_id))
    search("previous page", after=(s.now - 3 * day, s.payment_id), ascending=True)
    search("reference", reference_number=s.reference)
    # What an operator types: the start of a reference, in any case.
    search("reference prefix", reference_prefix=s.reference[:-1].lower())
    search("reference prefix, next page", reference_prefix=s.reference[:-1].lower(),
           after=(s.now - 3 * day, s.payment_id))  # fmt: skip
    search("cif", cif=s.cif)
    search("loan account", loan_account_number=s.account)
    search("pending", status="pending")
    search("failed, cif", status="failed", cif=s.cif)
    search("succeeded", status="succeeded")
    search("staging", source="staging")
    search("channel", channel="card")
    search("a day", since=s.now - 2 * day, until=s.now - day)
    search("a day, pending", since=s.now - 2 * day, until=s.now - day, status="pending")
    search("pending, next page", status="pending", after=(s.now - 3 * day, s.payment_id))

    out.append(Query("payment by id", timeline._BY_ID, (s.payment_id,)))
    out.append(Query("payment by reference", timeline._BY_REFERENCE, (s.reference,)))
    for name in ("_DELIVERIES", "_AUDIT"):
        out.append(Query(f"timeline {name.lower()[1:]}", getattr(timeline, name),
                         (s.reference, s.payment_id)))  # fmt: skip
    for name in ("_RECONCILIATION", "_REVIEWS"):
        out.append(Query(f"timeline {name.lower()[1:]}", getattr(timeline, name), (s.reference,)))
    # The outbox lookup's own query (the function plans it with seq/bitmap scans off).
    out.append(Query(
        "timeline outbox",
        "SELECT id FROM payment_service.outbox WHERE key = $1 AND dead_lettered_at IS NULL"
        " UNION ALL SELECT id FROM payment_service.outbox"
        " WHERE key = $1 AND dead_lettered_at IS NOT NULL",
        (s.reference,),
    ))  # fmt: skip

    def dl(name: str, after: Any = None, oldest: bool = False, **f: Any) -> None:
        sql, args = deliveries.list_sql(
            deliveries.DeliveryFilter(**f), after, PAGE, oldest_first=oldest
        )
        out.append(Query(f"deliveries: {name}", sql, tuple(args)))

    dl("newest")
    dl("next page", after=(s.now - 3 * day, 10**9))
    dl("previous page", after=(s.now - 3 * day, 10**9), oldest=True)
    dl("invalid, previous page", outcome="invalid", after=(s.now - day, 10**9), oldest=True)
    dl("invalid", outcome="invalid")
    dl("ignored, partner", outcome="ignored", channel="partner")
    dl("conflict", outcome="conflict")
    dl("created", outcome="created")
    dl("reference", reference_number=s.reference)
    dl("a day", since=s.now - 2 * day, until=s.now - day)
    dl("bulk: invalid oldest first", outcome="invalid", oldest=True)
    dl("bulk: partner since", channel="partner", since=s.now - day, oldest=True)
    out.append(Query("delivery by id", deliveries._GET, (s.delivery_id,)))
    out.append(Query("delivery replays", deliveries._REPLAYS, (s.delivery_id,)))

    out.append(Query("runs: newest", reconciliation._RUNS, (None, None, PAGE)))
    out.append(Query("runs: next page", reconciliation._RUNS, (s.now - 5 * day, s.run_id, PAGE)))
    out.append(Query("run items", reconciliation._ITEMS, (s.run_id, None, 0, PAGE)))

    def exc(name: str, after: Any = None, newest_first: bool = False, **f: Any) -> None:
        sql, args = exceptions.list_sql(
            exceptions.ExceptionFilter(**f), after, PAGE, newest_first=newest_first
        )
        out.append(Query(f"exceptions: {name}", sql, tuple(args)))

    exc("queue")
    exc("queue, next page", after=(s.now - 2 * day, wf.ITEM, s.item_id))
    exc("queue, previous page", after=(s.now - 2 * day, wf.ITEM, s.item_id), newest_first=True)
    exc("all", state="all")
    exc("resolved", state="resolved")
    exc("assigned to", state="assigned", assignee="dana")
    exc("reviews", kind=wf.REVIEW)
    exc("a run", run_id=s.run_id, state="all")
    exc("a reference", reference_number=s.reference, state="all")
    exc("old and large", created_before=s.now - 2 * day, min_amount=1)
    for kind in wf.KINDS:
        out.append(
            Query(f"exception {kind}", exceptions._select_one(kind, lock=False), (s.item_id,))
        )
    out.append(Query("exception comments", exceptions._COMMENTS, (wf.ITEM, s.item_id)))
    out.append(Query("exception trail", exceptions._TRAIL,
                     (s.reference, wf.ITEM, s.item_id, s.payment_id)))  # fmt: skip
    return out


async def plan(conn: asyncpg.Connection, q: Query) -> dict[str, Any]:
    raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {q.sql}", *q.args)
    doc = json.loads(raw) if isinstance(raw, str) else raw
    return dict(doc[0]["Plan"])


def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from nodes(child)


def _growing(relation: str) -> bool:
    return any(relation == t or relation.startswith(t + "_") for t in GROWING)


async def empty_relations(conn: asyncpg.Connection) -> frozenset[str]:
    """Tables with no pages (future months, an empty DEFAULT): scanning one costs nothing,
    and the planner rightly skips their indexes."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'payment_service' AND c.relkind = 'r' AND c.relpages = 0"
    )
    return frozenset(r["relname"] for r in rows)


def problems(
    node: dict[str, Any], empty: frozenset[str] = frozenset(), index_cond: str | None = None
) -> list[str]:
    found = []
    conds = [n.get("Index Cond", "") + n.get("Recheck Cond", "") for n in nodes(node)]
    if index_cond is not None and not any(index_cond in c for c in conds):
        found.append(f"no index condition {index_cond!r}")
    for n in nodes(node):
        kind = n["Node Type"]
        relation = n.get("Relation Name", "")
        if kind == "Seq Scan" and _growing(relation) and relation not in empty:
            found.append(f"sequential scan of {n['Relation Name']}")
        if kind == "Sort":
            rows = sum(c.get("Plan Rows", 0) for c in n.get("Plans", []))
            if rows > SORT_ROWS_MAX:
                found.append(f"sort of ~{rows} rows")
    return found


def render(node: dict[str, Any], depth: int = 0) -> str:
    """A plan as indented lines: node, relation/index, estimated rows."""
    what = node["Node Type"]
    where = node.get("Index Name") or node.get("Relation Name") or ""
    line = f"{'  ' * depth}{what} {where} (rows={node.get('Plan Rows')})".rstrip()
    return "\n".join([line, *(render(c, depth + 1) for c in node.get("Plans", []))])


async def check_all(
    conn: asyncpg.Connection, sample: Sample
) -> dict[str, tuple[dict[str, Any], list[str]]]:
    empty = await empty_relations(conn)
    return {
        q.name: ((p := await plan(conn, q)), problems(p, empty, q.index_cond))
        for q in queries(sample)
    }


async def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payments", type=int, default=1_000_000)
    args = parser.parse_args()
    from tests.conftest import make_settings
    from tests.stack import TestStack
    from workers.cli.migrate import prepare_database

    stack = await TestStack.start()
    try:
        await prepare_database(make_settings(stack))
        conn = await asyncpg.connect(stack.database_url)
        started = time.monotonic()
        sample = await fill(conn, args.payments)
        print(f"filled {args.payments:,} payments in {time.monotonic() - started:.0f} s")
        bad = 0
        for name, (p, found) in (await check_all(conn, sample)).items():
            print(f"\n## {name}: {'OK' if not found else '; '.join(found)}\n{render(p)}")
            bad += bool(found)
        print(f"\n{bad} of {len(queries(sample))} queries not index-served")
        await conn.close()
    finally:
        await stack.stop()


if __name__ == "__main__":
    asyncio.run(_main())
