"""Matching a loaded statement against our payments, set-based (gateway.db.reconciliation
loads the lines into the session's `recon_statement` table and calls `match`).

What an accountant expects of it (docs/reconciliation.md has the table):

- the period is the one named, or inferred from the lines without letting a stray line
  widen it (gateway.domain.statement_period); lines outside it are `outside_period`;
- the lines of one reference are one group: their signed sum (sales, refunds and
  reversals netted; a failed line settles nothing) is compared with what the payment's
  final status says the statement should show, so split settlements and sale + refund
  pairs match, and a group that repeats an identical line without adding up is a
  `duplicate_in_statement`;
- a currency column that disagrees with the payment's currency is `currency_mismatch`;
- notes on the item, not categories: a date further than the tolerance from the
  payment's date, a fee the bank rounded differently, a case-only reference suggested
  as the match of a `missing_internal` line;
- a difference (reference + category) is one open item across runs: a run that finds
  it again links its item to the open one, a run that covers the reference and no
  longer finds it says so on the open item.

Most groups are one line, so only references with several lines are aggregated
(`recon_multi`); the rest are classified straight from their line.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from gateway.domain.statement_period import Day, infer_period
from gateway.domain.statements import CATEGORIES, EXCEPTIONS, StatementOptions

LONG = 3600.0  # seconds: one statement over millions of rows may outlast the pool default
_MATCHED = "('matched', 'matched_with_fee')"
# The partial indexes' predicate, spelled as they are (idx_recon_items_open, sql/140).
_OPEN = f"state <> 'resolved' AND category NOT IN {_MATCHED} AND open_item_id IS NULL"

_SPAN = "SELECT min(payment_date)::date, max(payment_date)::date FROM pg_temp.recon_statement"

# Our payments of the span that no line names (before the period is settled).
_MISSING = """
CREATE TEMP TABLE recon_missing ON COMMIT DROP AS
SELECT p.reference_number, p.id, p.amount, p.status, p.payment_date
FROM payment_service.payments p
WHERE p.payment_date >= $1 AND p.payment_date < $2 AND p.status <> 'failed'
  AND NOT EXISTS (SELECT 1 FROM pg_temp.recon_statement s
                  WHERE s.reference_number = p.reference_number)
"""

_DAYS = """
SELECT d, sum(lines)::int AS lines, sum(ours)::int AS ours, sum(missing)::int AS missing FROM (
    SELECT payment_date::date AS d, count(*) AS lines, 0 AS ours, 0 AS missing
    FROM pg_temp.recon_statement GROUP BY 1
    UNION ALL
    SELECT payment_date::date, 0, count(*), 0 FROM payment_service.payments
    WHERE payment_date >= $1 AND payment_date < $2 AND status <> 'failed' GROUP BY 1
    UNION ALL
    SELECT payment_date::date, 0, 0, count(*) FROM pg_temp.recon_missing GROUP BY 1
) x GROUP BY d ORDER BY d
"""

# References with several lines in the period, aggregated. A failed line settles nothing;
# refund lines are negative already (gateway.domain.statements.parse_row).
_MULTI = """
CREATE TEMP TABLE recon_multi ON COMMIT DROP AS
SELECT s.reference_number, count(*)::int AS lines, min(s.line_number) AS first_line,
       sum(CASE WHEN s.status = 'failed' THEN 0 ELSE s.amount END) AS net,
       bool_or(s.amount > 0 AND s.status IS DISTINCT FROM 'failed') AS has_sale,
       bool_or(s.amount < 0) AS has_refund,
       min(s.payment_date) FILTER (WHERE s.amount >= 0) AS sale_at,
       (array_agg(s.status ORDER BY s.payment_date DESC, s.line_number DESC)
            FILTER (WHERE s.status IS NOT NULL))[1] AS final_status,
       min(s.currency) AS currency, count(DISTINCT s.currency)::int AS currencies,
       count(*) > count(DISTINCT ROW(s.amount, s.payment_date, s.status, s.currency)) AS repeated,
       array_agg(s.line_number ORDER BY s.line_number) AS line_numbers
FROM pg_temp.recon_statement s
WHERE s.payment_date >= $1 AND s.payment_date < $2
  AND s.reference_number IN (
      SELECT reference_number FROM pg_temp.recon_statement
      WHERE payment_date >= $1 AND payment_date < $2
      GROUP BY reference_number HAVING count(*) > 1)
GROUP BY s.reference_number
"""

# With references of several lines, their lines are left out of the singles and their
# groups added (without any, the statement is read as it is: no anti-join per line).
_WITH_MULTI = """
      AND NOT EXISTS (SELECT 1 FROM pg_temp.recon_multi m
                      WHERE m.reference_number = s.reference_number)
    UNION ALL
    SELECT reference_number, first_line, lines, net, has_sale, has_refund, sale_at,
           final_status, currency, currencies, repeated, line_numbers
    FROM pg_temp.recon_multi"""

# $1 run, $2 period start, $3 period end (exclusive), $4 tolerance, $5 fee rule on,
# $6 fee percent, $7 fee fixed, $8 keep matched, $9 date tolerance (days).
_CLASSIFY = f"""
WITH g AS (
    -- One line per reference (nearly all): the line is the group. An anti-join, so the
    -- planner sees every line coming (an OR over the join misled it into nested loops).
    SELECT s.reference_number, s.line_number, 1 AS lines,
           CASE WHEN s.status = 'failed' THEN 0 ELSE s.amount END AS net,
           s.amount > 0 AND s.status IS DISTINCT FROM 'failed' AS has_sale,
           s.amount < 0 AS has_refund,
           CASE WHEN s.amount >= 0 THEN s.payment_date END AS sale_at,
           s.status AS final_status, s.currency, (s.currency IS NOT NULL)::int AS currencies,
           false AS repeated, NULL::int[] AS line_numbers
    FROM pg_temp.recon_statement s
    WHERE s.payment_date >= $2 AND s.payment_date < $3 {{singles}}
), c AS (
    SELECT g.*, p.id AS payment_id, p.amount AS p_amount, p.status AS p_status,
           upper(p.currency) AS p_currency, r.reference_number IS NOT NULL AS referenced,
           abs(g.sale_at::date - p.payment_date::date) AS days_apart,
           CASE WHEN p.status = 'failed' THEN 0
                WHEN p.status IN ('refunded', 'reversed') AND g.has_refund
                  THEN CASE WHEN g.has_sale THEN 0 ELSE -p.amount END
                ELSE p.amount END AS expected
    FROM g
    LEFT JOIN payment_service.payment_references r ON r.reference_number = g.reference_number
    LEFT JOIN payment_service.payments p
           ON p.id = r.payment_id AND p.payment_date = r.payment_date
), k AS (
    SELECT c.*, CASE
        WHEN payment_id IS NULL THEN 'missing_internal'
        WHEN currencies > 1 OR currency <> p_currency THEN 'currency_mismatch'
        WHEN final_status IS NOT NULL AND final_status <> p_status THEN 'status_mismatch'
        WHEN abs(net - expected) <= $4
          THEN CASE WHEN net = expected THEN 'matched' ELSE 'matched_with_fee' END
        WHEN repeated THEN 'duplicate_in_statement'
        WHEN $5 AND expected = p_amount AND expected > 0
             AND abs(net - expected + round(expected * $6 / 100 + $7, 2)) <= $4 + 0.01 * lines
          THEN 'matched_with_fee'
        ELSE 'amount_mismatch'
    END AS category
    FROM c
), n AS (
    SELECT k.*,
           CASE WHEN days_apart > $9 THEN days_apart END AS date_note,
           -- Only for the few matched through the fee rule: what its rounding left.
           CASE WHEN category = 'matched_with_fee' AND abs(net - expected) > $4
                THEN nullif(net - expected + round(expected * $6 / 100 + $7, 2), 0)
           END AS fee_note
    FROM k
), ins AS (
    INSERT INTO payment_service.reconciliation_items
        (run_id, category, reference_number, payment_id, line_number, statement_amount,
         internal_amount, difference, statement_status, internal_status, details)
    SELECT $1, category, reference_number, payment_id, line_number, net, p_amount,
           CASE WHEN category <> 'currency_mismatch' THEN net - expected END,
           final_status, p_status,
           CASE WHEN currency IS NOT NULL OR line_numbers IS NOT NULL OR date_note IS NOT NULL
                     OR fee_note IS NOT NULL OR expected <> p_amount
                     OR (payment_id IS NULL AND referenced)
                THEN jsonb_strip_nulls(jsonb_build_object(
                    'currency', currency,
                    'payment_currency',
                        CASE WHEN category = 'currency_mismatch' THEN p_currency END,
                    'lines', line_numbers,
                    'expected',
                        CASE WHEN expected <> p_amount THEN expected::numeric(15,2)::text END,
                    'date_difference_days', date_note,
                    'fee_rounding', fee_note::numeric(15,2)::text,
                    'note', CASE WHEN payment_id IS NULL AND referenced
                                 THEN 'reference known, payment row not found' END))
           END
    FROM n WHERE $8 OR category NOT IN {_MATCHED}
)
SELECT category, count(*) AS n, count(date_note) AS date_notes, count(fee_note) AS fee_notes
FROM n GROUP BY category
"""

# Lines dated outside the period: flagged one by one, never matched silently.
_OUTSIDE = """
WITH ins AS (
    INSERT INTO payment_service.reconciliation_items
        (run_id, category, reference_number, payment_id, line_number, statement_amount,
         internal_amount, statement_status, internal_status, details)
    SELECT $1, 'outside_period', s.reference_number, p.id, s.line_number, s.amount, p.amount,
           s.status, p.status,
           jsonb_strip_nulls(jsonb_build_object('line_date', s.payment_date::date,
                                                'period_start', $4::date,
                                                'period_end', $5::date,
                                                'currency', s.currency))
    FROM pg_temp.recon_statement s
    LEFT JOIN payment_service.payment_references r ON r.reference_number = s.reference_number
    LEFT JOIN payment_service.payments p
           ON p.id = r.payment_id AND p.payment_date = r.payment_date
    WHERE NOT (s.payment_date >= $2 AND s.payment_date < $3)
    RETURNING 1
)
SELECT count(*) FROM ins
"""

_MISSING_ITEMS = """
WITH ins AS (
    INSERT INTO payment_service.reconciliation_items
        (run_id, category, reference_number, payment_id, internal_amount, internal_status)
    SELECT $1, 'missing_in_statement', reference_number, id, amount, status
    FROM pg_temp.recon_missing WHERE payment_date >= $2 AND payment_date < $3
    RETURNING 1
)
SELECT count(*) FROM ins
"""

# A line whose reference differs from a payment of the period only in letter case: the
# pair is suggested (on both items), never matched by itself. One-to-one pairs only.
_SUGGEST = """
WITH pair AS (
    SELECT (array_agg(id) FILTER (WHERE category = 'missing_internal'))[1] AS mi_id,
           (array_agg(reference_number) FILTER (WHERE category = 'missing_internal'))[1] AS mi_ref,
           (array_agg(line_number) FILTER (WHERE category = 'missing_internal'))[1] AS line_number,
           (array_agg(id) FILTER (WHERE category = 'missing_in_statement'))[1] AS ms_id,
           (array_agg(reference_number) FILTER (WHERE category = 'missing_in_statement'))[1]
               AS ms_ref,
           (array_agg(payment_id) FILTER (WHERE category = 'missing_in_statement'))[1]
               AS payment_id
    FROM payment_service.reconciliation_items
    WHERE run_id = $1 AND category IN ('missing_internal', 'missing_in_statement')
    GROUP BY lower(reference_number)
    HAVING count(*) FILTER (WHERE category = 'missing_internal') = 1
       AND count(*) FILTER (WHERE category = 'missing_in_statement') = 1
), upd AS (
    UPDATE payment_service.reconciliation_items i
    SET details = coalesce(i.details, '{}'::jsonb) || x.d
    FROM (
        SELECT mi_id AS id, jsonb_build_object(
            'suggestion', 'case_only', 'suggested_payment_id', payment_id,
            'suggested_reference', ms_ref, 'suggested_item_id', ms_id) AS d FROM pair
        UNION ALL
        SELECT ms_id, jsonb_build_object(
            'suggestion', 'case_only', 'suggested_line', line_number,
            'suggested_reference', mi_ref, 'suggested_item_id', mi_id) FROM pair
    ) x
    WHERE i.id = x.id
    RETURNING 1
)
SELECT count(*) / 2 FROM upd
"""

_HAS_OPEN = f"""
SELECT EXISTS (SELECT 1 FROM payment_service.reconciliation_items
               WHERE {_OPEN} AND run_id <> $1)
"""

# This run's differences that are open already: linked to the open item, which counts them.
_LINK = f"""
WITH found AS (
    SELECT DISTINCT ON (n.id) n.id, o.id AS open_id
    FROM payment_service.reconciliation_items n
    JOIN payment_service.reconciliation_items o
      ON o.reference_number = n.reference_number AND o.category = n.category
     AND o.{_OPEN.replace(" AND ", " AND o.")} AND o.run_id <> $1
    WHERE n.run_id = $1 AND n.category NOT IN {_MATCHED}
    ORDER BY n.id, o.id
), linked AS (
    UPDATE payment_service.reconciliation_items n SET open_item_id = f.open_id
    FROM found f WHERE n.id = f.id
    RETURNING f.open_id
), seen AS (
    UPDATE payment_service.reconciliation_items o
    SET seen_count = o.seen_count + l.n, last_seen_run_id = $1, last_seen_at = now(),
        cleared_run_id = NULL, cleared_at = NULL
    FROM (SELECT open_id, count(*)::int AS n FROM linked GROUP BY open_id) l
    WHERE o.id = l.open_id
)
SELECT count(*) FROM linked
"""

# Open items of earlier runs whose reference this statement has, but which this run did
# not find again: the run says so on them (an operator still resolves them).
_CLEAR = f"""
WITH cleared AS (
    UPDATE payment_service.reconciliation_items o
    SET cleared_run_id = $1, cleared_at = now()
    WHERE {_OPEN} AND run_id <> $1 AND last_seen_run_id IS DISTINCT FROM $1
      AND reference_number IN (SELECT reference_number FROM pg_temp.recon_statement)
    RETURNING 1
)
SELECT count(*) FROM cleared
"""


@dataclass
class Matched:
    """What `match` found: the counts by category and the run's other figures."""

    period: tuple[date, date] | None
    inferred: bool
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    notes: dict[str, int] = field(
        default_factory=lambda: {"date_difference": 0, "fee_rounding": 0, "suggested_match": 0}
    )
    already_open: int = 0
    no_longer_found: int = 0

    def summary(self) -> dict[str, Any]:
        start, end = self.period or (None, None)
        exceptions = sum(n for c, n in self.counts.items() if c in EXCEPTIONS)
        return {
            "period": {
                "start": start.isoformat() if start else None,
                "end": end.isoformat() if end else None,
                "inferred": self.inferred,
            },
            "counts": self.counts,
            "notes": self.notes,
            "exceptions": exceptions,
            "new_exceptions": exceptions - self.already_open,
            "already_open": self.already_open,
            "no_longer_found": self.no_longer_found,
        }


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


async def settle_period(
    conn: asyncpg.Connection, options: StatementOptions
) -> tuple[tuple[date, date] | None, bool]:
    """The period, and our payments of it that no line names (in `recon_missing`)."""
    first, last = await conn.fetchrow(_SPAN)
    if options.period_start is not None and options.period_end is not None:
        lo, hi = options.period_start, options.period_end
        explicit = True
    elif first is None:
        return None, True
    else:
        lo, hi = first, last
        explicit = False
    await conn.execute(_MISSING, midnight(lo), midnight(hi) + timedelta(days=1), timeout=LONG)
    if explicit or lo == hi:
        return (lo, hi), not explicit
    rows = await conn.fetch(_DAYS, midnight(lo), midnight(hi) + timedelta(days=1), timeout=LONG)
    days = [Day(r["d"], r["lines"], r["ours"], r["missing"]) for r in rows]
    return infer_period(days) or (lo, hi), True


async def match(conn: asyncpg.Connection, run_id: uuid.UUID, options: StatementOptions) -> Matched:
    """Classify every line of `recon_statement` into the run's items (in the caller's
    transaction)."""
    period, inferred = await settle_period(conn, options)
    out = Matched(period, inferred)
    if period is None:
        return out
    lo, hi = midnight(period[0]), midnight(period[1]) + timedelta(days=1)
    multi = await conn.execute(_MULTI, lo, hi, timeout=LONG)  # "SELECT <rows>"
    classify = _CLASSIFY.replace("{singles}", "" if multi == "SELECT 0" else _WITH_MULTI)
    if multi != "SELECT 0":
        await conn.execute("ANALYZE pg_temp.recon_multi", timeout=LONG)
    fee_rule = bool(options.fee_percent or options.fee_fixed)
    for row in await conn.fetch(
        classify, run_id, lo, hi, options.tolerance, fee_rule, options.fee_percent,
        options.fee_fixed, options.keep_matched, options.date_tolerance_days, timeout=LONG,
    ):  # fmt: skip
        out.counts[row["category"]] = row["n"]
        out.notes["date_difference"] += row["date_notes"]
        out.notes["fee_rounding"] += row["fee_notes"]
    out.counts["outside_period"] = await conn.fetchval(
        _OUTSIDE, run_id, lo, hi, period[0], period[1], timeout=LONG
    )
    out.counts["missing_in_statement"] = await conn.fetchval(
        _MISSING_ITEMS, run_id, lo, hi, timeout=LONG
    )
    if out.counts["missing_internal"] and out.counts["missing_in_statement"]:
        out.notes["suggested_match"] = await conn.fetchval(_SUGGEST, run_id, timeout=LONG)
    if await conn.fetchval(_HAS_OPEN, run_id):
        out.already_open = await conn.fetchval(_LINK, run_id, timeout=LONG)
        out.no_longer_found = await conn.fetchval(_CLEAR, run_id, timeout=LONG)
    return out
