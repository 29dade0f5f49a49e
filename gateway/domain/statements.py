"""Bank and provider statements, the pure half of reconciliation: the column mapping,
Decimal amounts, dates, line numbers of malformed lines, the categories and the fee rule.

A statement is parsed as it streams in, chunk by chunk (`StatementParser`), so a
million-line upload stays flat in memory; gateway.db.reconciliation loads the good lines
and matches them in SQL.
"""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from gateway.domain.model import REFERENCE_MAX, STATUSES

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
