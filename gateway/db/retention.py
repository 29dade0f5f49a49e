"""What each retained table holds against its retention, and what the next partition
maintenance run will remove: for `paygate partitions status` and the console overview.

Per table: rows (exact for small relations, the planner's estimate above
EXACT_COUNT_MAX_BYTES), bytes (tables, indexes and TOAST), the oldest data kept (the
oldest month with rows for a monthly table; the oldest reference's recording time for
`payment_references`), the moment retention keeps from, and what the next run removes:
the partitions `plan_table` retires (the same plan the maintainer executes) or the
expired references it deletes. Everything is read from the catalog, small partitions and
an index, so the console can ask on every page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeAlias

import asyncpg

from gateway.db.partition_plan import Existing, as_utc, parse_bound, plan_table, table_specs
from gateway.db.tables import SCHEMA, quote_ident

if TYPE_CHECKING:
    from gateway.config import Settings

Executor: TypeAlias = asyncpg.Pool | asyncpg.Connection

# Above this size a relation's row count is the planner's estimate, not count(*).
EXACT_COUNT_MAX_BYTES = 16 * 1024 * 1024
# Expired references are counted up to this many: a backlog past it is shown as "more".
DUE_COUNT_MAX = 100_000
REFERENCES = "payment_references"


@dataclass(frozen=True)
class Retiring:
    """A partition the next run detaches or drops."""

    name: str
    rows: int
    exact: bool
    bytes: int


@dataclass(frozen=True)
class TableRetention:
    table: str
    rows: int
    exact: bool  # rows counted, not estimated
    bytes: int
    oldest: datetime | None  # oldest data kept (month start for monthly tables); None: empty
    keep_from: datetime  # retention keeps what is at or after this
    retention: str  # "12 months", "90 days"
    setting: str  # the variable that sets it
    action: str  # detach | drop (partitions) or delete (references)
    retiring: tuple[Retiring, ...] = ()
    due_rows: int = 0  # rows the next run removes (estimated for partitions)
    due_capped: bool = False  # more than DUE_COUNT_MAX expired references

    @property
    def overdue(self) -> bool:
        """Data older than retention is still kept (the next run removes it)."""
        return self.oldest is not None and self.oldest < self.keep_from


def _month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _q(schema: str, name: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(name)}"


async def attached_partitions(db: Executor, qualified_table: str) -> list[Existing]:
    """The partitions attached to a table, with their bounds (the DEFAULT one marked)."""
    rows = await db.fetch(
        """
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = to_regclass($1)
        ORDER BY c.relname
        """,
        qualified_table,
    )
    found = []
    for row in rows:
        bounds = parse_bound(row["bound"])
        if bounds is None:
            found.append(Existing(row["relname"], None, None, is_default=True))
        else:
            found.append(Existing(row["relname"], *bounds))
    return found


async def installed_at(db: Executor, schema: str = SCHEMA) -> datetime | None:
    """When the schema was first migrated (None for a schema without migrations)."""
    table = _q(schema, "schema_migrations")
    if await db.fetchval("SELECT to_regclass($1) IS NULL", table):
        return None
    installed: datetime | None = await db.fetchval(f"SELECT min(applied_at) FROM {table}")
    return installed


async def row_count(
    db: Executor, qualified: str, exact_max_bytes: int = EXACT_COUNT_MAX_BYTES
) -> tuple[int | None, int, bool]:
    """(rows, bytes, exact) of one relation; rows None when it does not exist. Counted
    up to `exact_max_bytes` of heap, or when the planner has no estimate yet."""
    row = await db.fetchrow(
        "SELECT pg_relation_size(c.oid) AS heap, pg_total_relation_size(c.oid) AS total,"
        " c.reltuples FROM pg_class c WHERE c.oid = to_regclass($1)",
        qualified,
    )
    if row is None:
        return None, 0, True
    if row["heap"] <= exact_max_bytes or row["reltuples"] < 0:
        return int(await db.fetchval(f"SELECT count(*) FROM {qualified}")), row["total"], True
    return max(int(row["reltuples"]), 0), row["total"], False


async def _monthly(
    db: Executor,
    settings: Settings,
    schema: str,
    now: datetime,
    installed: datetime | None,
    exact_max_bytes: int,
) -> list[TableRetention]:
    out = []
    drop = settings.partition_retention_action == "drop"
    settings_name = {
        "payments": "PARTITION_RETENTION_MONTHS",
        "webhook_events": "WEBHOOK_EVENTS_RETENTION_MONTHS",
        "audit_log": "AUDIT_LOG_RETENTION_MONTHS",
    }
    for spec in table_specs(settings):
        existing = await attached_partitions(db, _q(schema, spec.name))
        plan = plan_table(spec, now, settings.partition_premake_months, existing, installed)
        retire = {e.name for e in plan.retire if not e.is_default}
        rows = size = 0
        exact = True
        oldest: datetime | None = None
        retiring = []
        # Oldest month first: the first partition holding a row is the oldest data kept.
        for e in sorted(existing, key=lambda e: (e.is_default, e.lower or now)):
            n, b, is_exact = await row_count(db, _q(schema, e.name), exact_max_bytes)
            n = n or 0
            rows, size, exact = rows + n, size + b, exact and is_exact
            if oldest is None and not e.is_default and e.lower is not None and n:
                oldest = e.lower
            elif e.is_default and n and is_exact:  # small by design: its oldest row
                first = await db.fetchval(
                    f"SELECT min({quote_ident(spec.column)}) FROM {_q(schema, e.name)}"
                )
                first = _month_start(as_utc(first))
                oldest = first if oldest is None else min(oldest, first)
            if e.name in retire:
                retiring.append(Retiring(e.name, n, is_exact, b))
        out.append(TableRetention(
            spec.name, rows, exact, size, oldest, plan.retention_start,
            f"{spec.retention_months} months", settings_name[spec.name],
            "drop" if drop else "detach", tuple(retiring), sum(r.rows for r in retiring),
        ))  # fmt: skip
    return out


async def _references(
    db: Executor, settings: Settings, schema: str, now: datetime, exact_max_bytes: int
) -> TableRetention:
    table = _q(schema, REFERENCES)
    keep_from = now - timedelta(days=settings.reference_cache_ttl_days)
    rows, size, exact = await row_count(db, table, exact_max_bytes)
    oldest = await db.fetchval(f"SELECT min(created_at) FROM {table}")
    due = await db.fetchval(
        f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE created_at < $1 LIMIT $2) d",
        keep_from,
        DUE_COUNT_MAX + 1,
    )
    return TableRetention(
        REFERENCES, rows or 0, exact, size, oldest, keep_from,
        f"{settings.reference_cache_ttl_days} days", "REFERENCE_CACHE_TTL_DAYS", "delete",
        (), min(int(due), DUE_COUNT_MAX), int(due) > DUE_COUNT_MAX,
    )  # fmt: skip


async def retention_report(
    db: Executor,
    settings: Settings,
    now: datetime | None = None,
    schema: str = SCHEMA,
    exact_max_bytes: int = EXACT_COUNT_MAX_BYTES,
) -> list[TableRetention]:
    """Every retained table: the monthly ones in PARTITIONED_TABLES order, then the
    references. A page asked often passes a small `exact_max_bytes` (counting is then
    left to the planner's estimates for all but tiny partitions)."""
    now = now or datetime.now(UTC)
    installed = await installed_at(db, schema)
    return [
        *await _monthly(db, settings, schema, now, installed, exact_max_bytes),
        await _references(db, settings, schema, now, exact_max_bytes),
    ]


# Presentation shared by `paygate partitions status` and the console overview.


def size_text(n: int) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def rows_text(n: int, exact: bool) -> str:
    return f"{n:,}" if exact else f"~{n:,}"


def oldest_text(t: TableRetention) -> str:
    if t.oldest is None:
        return "empty"
    shape = "%Y-%m-%d %H:%M" if t.table == REFERENCES else "%Y-%m"
    return t.oldest.astimezone(UTC).strftime(shape)


def keep_from_text(t: TableRetention) -> str:
    shape = "%Y-%m-%d %H:%M" if t.table == REFERENCES else "%Y-%m-%d"
    return t.keep_from.astimezone(UTC).strftime(shape)


def next_run_text(t: TableRetention) -> str:
    """What the next maintenance run removes from this table, in words."""
    if t.table == REFERENCES:
        if not t.due_rows:
            return "nothing"
        more = "more than " if t.due_capped else ""
        noun = "reference" if t.due_rows == 1 and not t.due_capped else "references"
        return f"delete {more}{t.due_rows:,} expired {noun}"
    if not t.retiring:
        return "nothing"
    names = ", ".join(r.name for r in t.retiring)
    exact = all(r.exact for r in t.retiring)
    size = size_text(sum(r.bytes for r in t.retiring))
    return f"{t.action} {names} ({rows_text(t.due_rows, exact)} rows, {size})"


def format_retention(tables: list[TableRetention]) -> str:
    """`paygate partitions status`'s retention table: one line per retained table."""
    header = ("TABLE", "ROWS", "SIZE", "OLDEST KEPT", "KEEPS FROM", "RETENTION", "NEXT RUN")
    lines = [header]
    for t in tables:
        lines.append((
            t.table, rows_text(t.rows, t.exact), size_text(t.bytes), oldest_text(t),
            keep_from_text(t), f"{t.retention} ({t.setting})", next_run_text(t),
        ))  # fmt: skip
    widths = [max(len(line[c]) for line in lines) for c in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
