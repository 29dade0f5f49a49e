"""Statement reconciliation: a bank or provider statement (CSV) against our payments.

Webhooks are best effort (seed 002); the statement is the other side's ledger, and
reconciling against it is the safety net. The work is set-based so a million-line
statement stays a matter of seconds and of flat memory:

1. the upload is streamed and parsed chunk by chunk (pure code below: column mapping,
   Decimal amounts, dates, line numbers of malformed lines);
2. good lines are COPYed into a session TEMP table in chunks;
3. one INSERT ... SELECT classifies every line (matched, matched_with_fee,
   amount_mismatch, status_mismatch, missing_internal) and one more finds the payments
   of the period that the statement lacks (missing_in_statement).

Operators act on the exceptions through the run's items (API, CSV export). Events are
deliberately coarse: one `reconciliation.completed` outbox event per run with the
counts, plus an audit_log row for the first EXCEPTIONS_AUDITED exceptions. One event
per mismatch would flood the topic when a statement is badly off (the usual case for
a wrong period or mapping), and the items table already is the work list.
"""

from __future__ import annotations

import codecs
import csv
import logging
import re
import time
import uuid
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg
import orjson

from gateway.domain.model import REFERENCE_MAX, STATUSES
from gateway.observability import metrics

log = logging.getLogger(__name__)

COLUMNS = ("reference_number", "amount", "payment_date", "status", "currency")
REQUIRED = ("reference_number", "amount", "payment_date")
CATEGORIES = (
    "matched",
    "matched_with_fee",
    "amount_mismatch",
    "status_mismatch",
    "missing_internal",
    "missing_in_statement",
)
EXCEPTIONS = frozenset(CATEGORIES) - {"matched", "matched_with_fee"}
MAX_ERRORS = 1000  # malformed lines listed in the run; the count is always complete
COPY_CHUNK = 50_000
EXCEPTIONS_AUDITED = 100
COMPLETED_EVENT = "reconciliation.completed"

_AMOUNT = re.compile(r"[+-]?[0-9]{1,13}(?:\.[0-9]{1,2})?")
_STATUS_SET = frozenset(STATUSES)


class StatementError(ValueError):
    """The statement as a whole cannot be read (no header, a required column missing)."""


# -- options and pure parsing --------------------------------------------------------------


@dataclass(frozen=True)
class StatementOptions:
    delimiter: str = ","
    mapping: Mapping[str, str] = field(default_factory=dict)  # our column -> header in the file
    date_format: str | None = None  # strptime format; ISO 8601 when None
    period_start: date | None = None  # inclusive; defaults to the statement's first day
    period_end: date | None = None  # inclusive; defaults to the statement's last day
    tolerance: Decimal = Decimal("0")
    fee_percent: Decimal = Decimal("0")
    fee_fixed: Decimal = Decimal("0")
    keep_matched: bool = True  # store matched lines as items (else only counted)
    source: str | None = None


def parse_mapping(text: str) -> dict[str, str]:
    """`reference_number=ref,amount=amt` -> {"reference_number": "ref", "amount": "amt"}."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        ours, sep, theirs = part.partition("=")
        ours, theirs = ours.strip(), theirs.strip()
        if not sep or not theirs:
            raise ValueError(f"expected column=header, got {part[:60]!r}")
        if ours not in COLUMNS:
            raise ValueError(f"unknown column {ours[:40]!r}; expected one of {', '.join(COLUMNS)}")
        out[ours] = theirs
    return out


def parse_delimiter(text: str) -> str:
    value = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}.get(text, text)
    if len(value) != 1 or value in '\r\n"':
        raise ValueError("must be a single character (or tab)")
    return value


@dataclass(frozen=True, slots=True)
class Columns:
    """Positions of our columns in the file's rows (-1: not present)."""

    reference: int
    amount: int
    payment_date: int
    status: int
    currency: int
    width: int

    @classmethod
    def from_header(cls, header: list[str], mapping: Mapping[str, str]) -> Columns:
        names = [h.strip().lower() for h in header]
        pos: dict[str, int] = {}
        for col in COLUMNS:
            wanted = mapping.get(col, col).strip().lower()
            if wanted in names:
                pos[col] = names.index(wanted)
            elif col in REQUIRED:
                raise StatementError(f"the header has no column {mapping.get(col, col)[:60]!r}")
            else:
                pos[col] = -1
        return cls(
            pos["reference_number"], pos["amount"], pos["payment_date"], pos["status"],
            pos["currency"], max(pos.values()) + 1,
        )  # fmt: skip


Record = tuple[int, str, Decimal, datetime, str | None, str | None]


def parse_amount(text: str) -> Decimal:
    value = text.strip()
    if _AMOUNT.fullmatch(value) is None:
        raise ValueError("amount is not a decimal with at most 2 places")
    return Decimal(value)


def parse_date(text: str, date_format: str | None) -> datetime:
    value = text.strip()
    try:
        if date_format:
            parsed = datetime.strptime(value, date_format)
        elif len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time())
        else:
            parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("payment_date is not a valid date") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def parse_row(row: list[str], cols: Columns, line: int, date_format: str | None) -> Record:
    """One CSV row -> a record for the temp table; ValueError names what is wrong."""
    if len(row) < cols.width:
        raise ValueError(f"expected at least {cols.width} columns, got {len(row)}")
    ref = row[cols.reference].strip()
    if not ref:
        raise ValueError("reference_number is empty")
    if len(ref) > REFERENCE_MAX or not ref.isprintable() or "\ufffd" in ref:
        raise ValueError("reference_number is too long or has invalid characters")
    amount = parse_amount(row[cols.amount])
    paid = parse_date(row[cols.payment_date], date_format)
    status: str | None = None
    if cols.status >= 0:
        status = row[cols.status].strip().lower() or None
        if status is not None and status not in _STATUS_SET:
            raise ValueError("status is not one of " + ", ".join(STATUSES))
    currency: str | None = None
    if cols.currency >= 0:
        currency = row[cols.currency].strip().upper()[:3] or None
    return (line, ref, amount, paid, status, currency)


class StatementParser:
    """Incremental: feed it bytes as they arrive, get back the records of complete lines.

    Line numbers are physical lines (the header is line 1). A quoted field spanning a
    line break is supported within one chunk; across chunks it reads as malformed.
    """

    def __init__(self, options: StatementOptions) -> None:
        self.options = options
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._tail = ""
        self.line = 0  # physical lines consumed so far
        self.columns: Columns | None = None
        self.total = 0  # data rows seen (blank lines excluded)
        self.malformed = 0
        self.errors: list[dict[str, Any]] = []

    def feed(self, chunk: bytes) -> list[Record]:
        text = self._tail + self._decoder.decode(chunk)
        cut = text.rfind("\n")
        if cut < 0:
            self._tail = text
            return []
        self._tail = text[cut + 1 :]
        return self._parse(text[:cut])

    def finish(self) -> list[Record]:
        text = self._tail + self._decoder.decode(b"", final=True)
        self._tail = ""
        records = self._parse(text) if text.strip() else []
        if self.columns is None:
            raise StatementError("the statement is empty: no header line")
        return records

    def error(self, line: int, message: str) -> None:
        self.malformed += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"line": line, "error": message})

    def _parse(self, text: str) -> list[Record]:
        opts = self.options
        # Split on "\n" only: str.splitlines() also breaks on form feeds and Unicode separators.
        reader = csv.reader(text.split("\n"), delimiter=opts.delimiter)
        base = self.line
        records: list[Record] = []
        previous = 0
        while True:
            start = base + previous + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:  # e.g. a field over the csv module's size limit
                previous = reader.line_num
                if self.columns is None:
                    raise StatementError(f"unreadable header: {exc}") from None
                self.total += 1
                self.error(start, f"unreadable CSV line: {str(exc)[:100]}")
                continue
            previous = reader.line_num
            if self.columns is None:
                self.columns = Columns.from_header(row, opts.mapping)
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            self.total += 1
            try:
                records.append(parse_row(row, self.columns, start, opts.date_format))
            except ValueError as exc:
                self.error(start, str(exc))
        self.line = base + reader.line_num
        return records


def expected_after_fee(amount: Decimal, percent: Decimal, fixed: Decimal) -> Decimal:
    """What the statement should show for `amount` after seed 001's fee deduction."""
    # ROUND_HALF_UP: what Postgres's round(numeric, 2) does in the matching SQL.
    fee = (amount * percent / 100 + fixed).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return amount - fee


# -- SQL -----------------------------------------------------------------------------------

_TEMP = """
DROP TABLE IF EXISTS pg_temp.recon_statement;
CREATE TEMP TABLE recon_statement (
    line_number      INTEGER NOT NULL,
    reference_number TEXT NOT NULL,
    amount           NUMERIC(15,2) NOT NULL,
    payment_date     TIMESTAMP NOT NULL,
    status           TEXT,
    currency         TEXT
)
"""

_DUPLICATES = """
WITH d AS (
    SELECT reference_number, min(line_number) AS first
    FROM recon_statement GROUP BY reference_number HAVING count(*) > 1
)
DELETE FROM recon_statement s USING d
WHERE s.reference_number = d.reference_number AND s.line_number > d.first
RETURNING s.line_number, d.first
"""

_MATCH = """
WITH c AS (
    SELECT s.line_number, s.reference_number, p.id AS payment_id,
           s.amount AS s_amount, p.amount AS p_amount, s.status AS s_status, p.status AS p_status,
           CASE
             WHEN p.id IS NULL THEN 'missing_internal'
             WHEN s.amount <> p.amount AND abs(s.amount - p.amount) > $2
                  AND NOT ($3 AND abs(s.amount - (p.amount - round(p.amount * $4 / 100 + $5, 2)))
                                  <= $2)
               THEN 'amount_mismatch'
             WHEN s.status IS NOT NULL AND s.status <> p.status THEN 'status_mismatch'
             WHEN s.amount <> p.amount THEN 'matched_with_fee'
             ELSE 'matched'
           END AS category,
           s.currency, r.reference_number IS NOT NULL AS referenced
    FROM recon_statement s
    LEFT JOIN payment_service.payment_references r ON r.reference_number = s.reference_number
    LEFT JOIN payment_service.payments p
           ON p.id = r.payment_id AND p.payment_date = r.payment_date
), ins AS (
    INSERT INTO payment_service.reconciliation_items
        (run_id, category, reference_number, payment_id, line_number, statement_amount,
         internal_amount, difference, statement_status, internal_status, details)
    SELECT $1, category, reference_number, payment_id, line_number, s_amount, p_amount,
           s_amount - p_amount, s_status, p_status,
           CASE WHEN currency IS NOT NULL OR (payment_id IS NULL AND referenced)
                THEN jsonb_strip_nulls(jsonb_build_object(
                    'currency', currency,
                    'note', CASE WHEN payment_id IS NULL AND referenced
                                 THEN 'reference known, payment row not found' END))
           END
    FROM c WHERE $6 OR category <> 'matched'
)
SELECT category, count(*) AS n FROM c GROUP BY category
"""

_MISSING_IN_STATEMENT = """
WITH ins AS (
    INSERT INTO payment_service.reconciliation_items
        (run_id, category, reference_number, payment_id, internal_amount, internal_status)
    SELECT $1, 'missing_in_statement', p.reference_number, p.id, p.amount, p.status
    FROM payment_service.payments p
    WHERE p.payment_date >= $2 AND p.payment_date < $3 AND p.status <> 'failed'
      AND NOT EXISTS (SELECT 1 FROM recon_statement s WHERE s.reference_number = p.reference_number)
    RETURNING 1
)
SELECT count(*) FROM ins
"""

_AUDIT_EXCEPTIONS = """
INSERT INTO payment_service.audit_log (actor, action, reference_number, payment_id, details)
SELECT $2, 'reconciliation_exception', reference_number, payment_id,
       jsonb_build_object('run_id', run_id, 'category', category, 'difference', difference,
                          'line_number', line_number)
FROM payment_service.reconciliation_items
WHERE run_id = $1 AND category <> ALL($3::text[])
ORDER BY id LIMIT $4
"""

_FINISH = """
UPDATE payment_service.reconciliation_runs
SET status = $2, summary = $3, errors = $4, total_lines = $5, malformed_lines = $6,
    period_start = $7, period_end = $8, completed_at = now()
WHERE id = $1
"""

_LONG = 3600.0  # seconds: one matching statement over millions of rows may outlast the pool default


async def reconcile_statement(
    pool: asyncpg.Pool,
    chunks: AsyncIterable[bytes],
    options: StatementOptions,
    *,
    topic: str,
    actor: str,
) -> dict[str, Any]:
    """Import a statement and match it; returns the run summary (also stored on the run).

    A statement that cannot be read at all (no header, a required column missing)
    marks the run failed and raises StatementError; malformed lines never do.
    """
    started = time.perf_counter()
    run_id = await pool.fetchval(
        "INSERT INTO payment_service.reconciliation_runs (kind, source, actor) "
        "VALUES ('statement', $1, $2) RETURNING id",
        (options.source or "upload")[:500], actor[:255],
    )  # fmt: skip
    parser = StatementParser(options)
    async with pool.acquire() as conn:
        try:
            await conn.execute(_TEMP)
            await _load(conn, parser, chunks)
            summary = await _match(conn, run_id, parser, options, topic=topic, actor=actor)
        except BaseException as exc:
            await _fail(pool, run_id, parser, exc)
            raise
        finally:
            await _drop_temp(conn)
    summary["duration_seconds"] = round(time.perf_counter() - started, 3)
    await pool.execute(
        "UPDATE payment_service.reconciliation_runs SET summary = $2 WHERE id = $1", run_id, summary
    )
    return summary


async def _load(
    conn: asyncpg.Connection, parser: StatementParser, chunks: AsyncIterable[bytes]
) -> None:
    buffer: list[Record] = []
    async for chunk in chunks:
        buffer.extend(parser.feed(chunk))
        if len(buffer) >= COPY_CHUNK:
            await _copy(conn, buffer)
            buffer = []
    buffer.extend(parser.finish())
    if buffer:
        await _copy(conn, buffer)


async def _copy(conn: asyncpg.Connection, records: list[Record]) -> None:
    await conn.copy_records_to_table(
        "recon_statement", records=records, schema_name="pg_temp", timeout=_LONG,
        columns=["line_number", "reference_number", "amount", "payment_date", "status", "currency"],
    )  # fmt: skip


async def _match(
    conn: asyncpg.Connection,
    run_id: uuid.UUID,
    parser: StatementParser,
    options: StatementOptions,
    *,
    topic: str,
    actor: str,
) -> dict[str, Any]:
    for row in await conn.fetch(_DUPLICATES, timeout=_LONG):
        parser.error(
            row["line_number"], f"duplicate reference_number (first on line {row['first']})"
        )
    await conn.execute("ANALYZE recon_statement", timeout=_LONG)
    first, last = await conn.fetchrow(
        "SELECT min(payment_date)::date, max(payment_date)::date FROM recon_statement"
    )
    start = options.period_start or first
    end = options.period_end or last

    counts = dict.fromkeys(CATEGORIES, 0)
    fee_rule = bool(options.fee_percent or options.fee_fixed)
    async with conn.transaction():
        await conn.execute("SET LOCAL work_mem = '256MB'")
        for row in await conn.fetch(
            _MATCH, run_id, options.tolerance, fee_rule, options.fee_percent, options.fee_fixed,
            options.keep_matched, timeout=_LONG,
        ):  # fmt: skip
            counts[row["category"]] = row["n"]
        if start is not None and end is not None:
            counts["missing_in_statement"] = await conn.fetchval(
                _MISSING_IN_STATEMENT, run_id, _midnight(start), _midnight(end) + timedelta(days=1),
                timeout=_LONG,
            )  # fmt: skip
        exceptions = sum(counts[c] for c in EXCEPTIONS)
        await conn.execute(
            _AUDIT_EXCEPTIONS, run_id, actor, ["matched", "matched_with_fee"], EXCEPTIONS_AUDITED
        )
        summary: dict[str, Any] = {
            "run_id": str(run_id),
            "status": "completed",
            "source": options.source,
            "total_lines": parser.total,
            "malformed_lines": parser.malformed,
            "period": {
                "start": start.isoformat() if start else None,
                "end": end.isoformat() if end else None,
            },
            "counts": counts,
            "exceptions": exceptions,
            "tolerance": str(options.tolerance),
            "fee_rule": {"percent": str(options.fee_percent), "fixed": str(options.fee_fixed)},
        }
        await _completed_event(conn, run_id, summary, topic)
        # The run itself is an ops action: who imported what, with its outcome.
        await conn.execute(
            "INSERT INTO payment_service.audit_log (actor, action, details)"
            " VALUES ($1, 'reconciliation_run', $2)",
            actor,
            {"run_id": str(run_id), "source": options.source, "counts": counts},
        )
        await conn.execute(
            _FINISH, run_id, "completed", summary, parser.errors, parser.total, parser.malformed,
            _midnight(start) if start else None, _midnight(end) if end else None,
        )  # fmt: skip
    for category, n in counts.items():
        if n:
            metrics.reconciliation_items.labels(category).inc(n)
    log.info("reconciliation run %s: %s", run_id, counts)
    return summary


async def _completed_event(
    conn: asyncpg.Connection, run_id: uuid.UUID, summary: dict[str, Any], topic: str
) -> None:
    event_id = uuid.uuid4()
    payload = {
        "event_id": str(event_id),
        "event_type": COMPLETED_EVENT,
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "run_id": str(run_id),
        "counts": summary["counts"],
        "exceptions": summary["exceptions"],
        "malformed_lines": summary["malformed_lines"],
        "period": summary["period"],
    }
    await conn.execute(
        "INSERT INTO payment_service.outbox (event_id, event_type, topic, key, payload) "
        "VALUES ($1, $2, $3, $4, $5)",
        event_id, COMPLETED_EVENT, topic, str(run_id), orjson.dumps(payload),
    )  # fmt: skip


async def _fail(
    pool: asyncpg.Pool, run_id: uuid.UUID, parser: StatementParser, exc: BaseException
) -> None:
    reason = str(exc) if isinstance(exc, StatementError) else f"{type(exc).__name__}"
    try:
        await pool.execute(
            _FINISH, run_id, "failed", {"status": "failed", "error": reason[:500]},
            parser.errors, parser.total, parser.malformed, None, None,
        )  # fmt: skip
    except Exception:
        log.exception("could not mark reconciliation run %s failed", run_id)


async def _drop_temp(conn: asyncpg.Connection) -> None:
    try:
        await conn.execute("DROP TABLE IF EXISTS pg_temp.recon_statement")
    except Exception:  # a broken connection is discarded by the pool with its temp table
        log.debug("could not drop the statement temp table", exc_info=True)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)
