"""Finding payments for operators: filters, newest first, keyset pages.

Every query is written so that an index serves it (tests/gateway/db/test_ops_plans.py
shows the plans; bench/ops.py measures them at 1,000,000 payments):

- a cif or loan account narrows through its own index (idx_payments_cif,
  idx_payments_loan_account) to one customer's rows, which are sorted;
- a reference, exact or a prefix in any case (what an operator types: `inv-10`), goes
  through idx_payments_reference_folded, the lower-cased reference in byte order
  (sql/151, the only index on it since sql/174): an exact one as `reference_equals`
  writes it, a prefix as a range written out (`~>=~`, `~<~`) rather than as LIKE, so the
  index serves it in a prepared statement's generic plan too;
- a status other than succeeded walks the partial idx_payments_uncommon_status;
- everything else walks idx_payments_created_at backwards, newest first, and stops at the
  page size. Filters without an index of their own (source, channel) are applied to the
  rows that walk reads, so a rare value costs a longer walk: give from/to to bound it.

Pages are keyset pages on (created_at, id): the cursor is the last row's key and the
next page starts strictly after it (never OFFSET); `ascending` walks the same way back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.db import keyset
from gateway.domain.model import STATUSES

COLUMNS = (
    "id, reference_number, loan_account_number, cif, amount, currency, payment_date, "
    "payment_at, payment_channel, source, status, status_updated_at, provider_event_at, "
    "version, created_at"
)
SOURCES = ("webhook", "staging")


@dataclass(frozen=True)
class PaymentFilter:
    reference_number: str | None = None
    reference_prefix: str | None = None  # case-insensitive
    cif: str | None = None
    loan_account_number: str | None = None
    status: str | None = None
    source: str | None = None
    channel: str | None = None  # payment_channel
    since: datetime | None = None  # created_at >= since
    until: datetime | None = None  # created_at < until


def reference_equals(column: str, value: str) -> str:
    """`column` (a payments reference) equals `value` (SQL expressions), written so that
    idx_payments_reference_folded serves it: equal references fold equal, and the exact
    comparison drops the other cases of the same letters."""
    return f"(lower({column}) = lower({value}) AND {column} = {value})"


def folded_range(prefix: str) -> tuple[str, str]:
    """[low, high) in byte order holding exactly the lower-cased strings starting with the
    lower-cased `prefix` (UTF-8's byte order is code point order)."""
    low = prefix.lower()
    head = low
    while head:
        last = ord(head[-1]) + 1
        if last == 0xD800:
            last = 0xE000  # surrogates are not characters
        if last <= 0x10FFFF:
            return low, head[:-1] + chr(last)
        head = head[:-1]
    raise ValueError("an empty prefix matches everything: give no prefix")


def search_sql(
    f: PaymentFilter,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    *,
    ascending: bool = False,
) -> tuple[str, list[Any]]:
    """The query for one page and its arguments."""
    where: list[str] = []
    params = keyset.Params()
    arg = params.add
    if f.reference_number is not None:
        where.append(reference_equals("reference_number", arg(f.reference_number)))
    for column in ("cif", "loan_account_number"):
        value = getattr(f, column)
        if value is not None:
            where.append(f"{column} = {arg(value)}")
    if f.reference_prefix:
        low, high = folded_range(f.reference_prefix)
        where.append(f"lower(reference_number) ~>=~ {arg(low)}")
        where.append(f"lower(reference_number) ~<~ {arg(high)}")
    if f.status is not None:
        if f.status not in STATUSES:
            raise ValueError(f"unknown status {f.status!r}")
        # A literal from the closed set, not a parameter: the planner can then prove the
        # partial index's predicate (status <> 'succeeded') from it, in every plan.
        where.append(f"status = '{f.status}'")
        if f.status != "succeeded":
            where.append("status <> 'succeeded'")
    if f.source is not None:
        if f.source not in SOURCES:
            raise ValueError(f"unknown source {f.source!r}")
        where.append(f"source = '{f.source}'")
    if f.channel is not None:
        where.append(f"payment_channel = {arg(f.channel)}")
    if f.since is not None:
        where.append(f"created_at >= {arg(f.since)}")
    if f.until is not None:
        where.append(f"created_at < {arg(f.until)}")
    if after is not None:
        at, last = arg(after[0]), arg(after[1])
        where.append(keyset.after("created_at", at, last, ascending=ascending))
    order = "created_at, id" if ascending else "created_at DESC, id DESC"
    sql = (
        f"SELECT {COLUMNS} FROM payment_service.payments"
        f" WHERE {' AND '.join(where) or 'TRUE'}"
        f" ORDER BY {order} LIMIT {arg(limit)}"
    )
    return sql, params.values


async def search(
    pool: asyncpg.Pool,
    f: PaymentFilter,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    *,
    ascending: bool = False,
) -> list[asyncpg.Record]:
    sql, args = search_sql(f, after, limit, ascending=ascending)
    return await pool.fetch(sql, *args)
