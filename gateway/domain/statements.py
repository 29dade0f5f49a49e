"""Bank and provider statements, the pure half of reconciliation: the column mapping,
Decimal amounts, signs, dates, line numbers of malformed lines, the categories, the fee
rule and a statement's identity.

A statement is parsed as it streams in, chunk by chunk (`StatementParser`), so a
million-line upload stays flat in memory; gateway.db.reconciliation loads the good lines
and matches them in SQL.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, BinaryIO

from gateway.domain.model import REFERENCE_MAX, STATUSES
from gateway.domain.references import reference_or_error

COLUMNS = ("reference_number", "amount", "payment_date", "status", "currency", "type")
REQUIRED = ("reference_number", "amount", "payment_date")
CATEGORIES = (
    "matched",
    "matched_with_fee",
    "amount_mismatch",
    "status_mismatch",
    "missing_internal",
    "missing_in_statement",
    "duplicate_in_statement",
    "currency_mismatch",
    "outside_period",
)
MATCHED = frozenset({"matched", "matched_with_fee"})
EXCEPTIONS = frozenset(CATEGORIES) - MATCHED
MAX_ERRORS = 1000  # malformed lines listed in the run; the count is always complete
READ_CHUNK = 256 * 1024

_AMOUNT = re.compile(r"[+-]?[0-9]{1,13}(?:\.[0-9]{1,2})?")
_CURRENCY = re.compile(r"[A-Z]{3}")
_STATUS_SET = frozenset(STATUSES)
# A type column says which way the money went: these take money back (the amount is
# negative whatever its sign in the file), the others bring it in.
REFUND_TYPES = frozenset({"refund", "reversal", "chargeback"})
SALE_TYPES = frozenset({"sale", "payment", "charge", "capture"})


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
    provider: str | None = None  # part of the statement's identity when named
    date_tolerance_days: int = 3  # a line dated further from its payment is noted

    def identity(self, file_digest: str) -> str:
        """A statement's identity: the file (its sha256), the provider and the period the
        uploader named, and the options that decide how the file is read and matched.
        `source` (a label) and `keep_matched` (what is stored) are not part of it."""
        parts = [
            file_digest, self.provider or "", str(self.period_start), str(self.period_end),
            self.delimiter, ",".join(f"{k}={v}" for k, v in sorted(self.mapping.items())),
            self.date_format or "", str(self.tolerance), str(self.fee_percent),
            str(self.fee_fixed), str(self.date_tolerance_days),
        ]  # fmt: skip
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


@dataclass
class StatementFile:
    """A statement already on disk (spooled from an upload, or the CLI's file), with the
    sha256 and size of its bytes: the import reads it in chunks."""

    file: BinaryIO
    digest: str
    size: int
    name: str | None = None

    @classmethod
    def open(cls, path: Path) -> StatementFile:
        f = path.open("rb")
        sha, size = hashlib.sha256(), 0
        while chunk := f.read(READ_CHUNK):
            sha.update(chunk)
            size += len(chunk)
        f.seek(0)
        return cls(f, sha.hexdigest(), size, path.name)

    async def chunks(self) -> AsyncIterator[bytes]:
        self.file.seek(0)
        while chunk := self.file.read(READ_CHUNK):
            yield chunk

    def close(self) -> None:
        self.file.close()


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
    type: int
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
            pos["currency"], pos["type"], max(pos.values()) + 1,
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
    # The provider's calendar date is the date (ARCHITECTURE "Dates"): an offset is
    # dropped, never converted, so 2026-11-24T01:00+05:30 stays on the 24th.
    return parsed if parsed.tzinfo is None else parsed.replace(tzinfo=None)


def parse_row(row: list[str], cols: Columns, line: int, date_format: str | None) -> Record:
    """One CSV row -> a record for the temp table; ValueError names what is wrong."""
    if len(row) < cols.width:
        raise ValueError(f"expected at least {cols.width} columns, got {len(row)}")
    ref = reference_or_error(row[cols.reference], REFERENCE_MAX)
    if not ref.isascii() and "\ufffd" in ref:
        raise ValueError("reference_number is not valid UTF-8")
    amount = parse_amount(row[cols.amount])
    paid = parse_date(row[cols.payment_date], date_format)
    status: str | None = None
    if cols.status >= 0:
        status = row[cols.status].strip().lower() or None
        if status is not None and status not in _STATUS_SET:
            raise ValueError("status is not one of " + ", ".join(STATUSES))
    currency: str | None = None
    if cols.currency >= 0:
        currency = row[cols.currency].strip().upper() or None
        if currency is not None and _CURRENCY.fullmatch(currency) is None:
            raise ValueError("currency is not a three-letter ISO 4217 code")
    if cols.type >= 0:
        kind = row[cols.type].strip().lower()
        if kind in REFUND_TYPES:
            amount = -abs(amount)
        elif kind and kind not in SALE_TYPES:
            raise ValueError("type is not one of " + ", ".join(sorted(SALE_TYPES | REFUND_TYPES)))
    if status in ("refunded", "reversed"):
        amount = -abs(amount)  # a refund line takes the money back whatever its sign
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
