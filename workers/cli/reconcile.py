"""`paygate reconcile FILE`: import a statement and print the run's summary.

    paygate reconcile statement.csv --delimiter ';' \
        --map reference_number=ref,amount=amt,payment_date=date \
        --tolerance 0.50 --fee-percent 2.9 --fee-fixed 0.30

The same import and matching as `POST /api/v1/reconciliation/statements`; the run and
its items are stored and can be read through `GET /api/v1/reconciliation/runs/{id}`.
Exit code 0 when the run completed (exceptions are results, not failures; add
`--fail-on-exceptions` for scripts), 1 with --fail-on-exceptions and exceptions found,
2 when the statement cannot be read.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from gateway.config import Settings
from gateway.db.pool import create_pool
from gateway.db.reconciliation import get_run, reconcile_statement
from gateway.domain.statements import (
    CATEGORIES,
    StatementError,
    StatementOptions,
    parse_delimiter,
    parse_mapping,
)
from gateway.errors import ConfigError
from workers.cli.command import Command
from workers.cli.discovery import locate

_CHUNK = 256 * 1024


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError("expected a decimal number") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError("expected a number >= 0")
    return value


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", type=Path)
    p.add_argument("--delimiter", default=",", help="one character, or 'tab'")
    p.add_argument("--map", default="", help="our column=header in the file, comma separated")
    p.add_argument("--date-format", default=None, help="strptime format (default ISO 8601)")
    p.add_argument("--period-start", type=date.fromisoformat, default=None)
    p.add_argument("--period-end", type=date.fromisoformat, default=None)
    p.add_argument("--tolerance", type=_decimal, default=None,
                   help="accepted difference (default RECONCILE_AMOUNT_TOLERANCE)")  # fmt: skip
    p.add_argument("--fee-percent", type=_decimal, default=Decimal("0"))
    p.add_argument("--fee-fixed", type=_decimal, default=Decimal("0"))
    p.add_argument("--no-matched", action="store_true", help="count matched lines, store none")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--fail-on-exceptions", action="store_true")


async def _read(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def options_from_args(args: argparse.Namespace, settings: Settings) -> StatementOptions:
    try:
        delimiter = parse_delimiter(args.delimiter)
        mapping = parse_mapping(args.map)
    except ValueError as exc:
        raise ConfigError(f"reconcile: {exc}") from None
    if (args.period_start is None) != (args.period_end is None):
        raise ConfigError("reconcile: give both --period-start and --period-end")
    return StatementOptions(
        delimiter=delimiter,
        mapping=mapping,
        date_format=args.date_format,
        period_start=args.period_start,
        period_end=args.period_end,
        tolerance=settings.reconcile_amount_tolerance if args.tolerance is None else args.tolerance,
        fee_percent=args.fee_percent,
        fee_fixed=args.fee_fixed,
        keep_matched=not args.no_matched,
        source=args.file.name,
    )


# Malformed lines printed one by one; the run keeps up to 1,000 (GET .../runs/{id}).
SHOWN_ERRORS = 20


def render(summary: dict[str, Any], errors: list[dict[str, Any]] | None = None) -> str:
    """The run's summary, then each malformed line's number and what was wrong with it."""
    counts = summary["counts"]
    width = max(len(c) for c in CATEGORIES)
    lines = [
        f"run {summary['run_id']}  ({summary['source']})",
        f"period {summary['period']['start']} .. {summary['period']['end']}",
        f"lines {summary['total_lines']}  malformed {summary['malformed_lines']}  "
        f"exceptions {summary['exceptions']}  in {summary.get('duration_seconds', 0):.1f}s",
    ]
    lines += [f"  {c:<{width}}  {counts.get(c, 0):>10}" for c in CATEGORIES]
    errors = errors or []
    if errors:
        lines.append("malformed lines:")
        lines += [f"  line {e['line']}: {e['error']}" for e in errors[:SHOWN_ERRORS]]
    hidden = summary["malformed_lines"] - min(len(errors), SHOWN_ERRORS)
    if hidden > 0:
        lines.append(
            f"  ... {hidden} more: GET /api/v1/reconciliation/runs/{summary['run_id']} lists them"
        )
    return "\n".join(lines)


async def _errors(pool: asyncpg.Pool, run_id: str) -> list[dict[str, Any]]:
    """The malformed lines the run stored (the summary carries only their count)."""
    run = await get_run(pool, uuid.UUID(run_id))
    return list(run["errors"] or []) if run is not None else []


async def run(args: argparse.Namespace, settings: Settings) -> int:
    settings = await locate(settings, "DATABASE_URL")
    if not args.file.is_file():
        print(f"paygate reconcile: no such file: {args.file}", file=sys.stderr)
        return 2
    options = options_from_args(args, settings)
    pool = await create_pool(settings, min_size=1, max_size=2)
    try:
        summary = await reconcile_statement(
            pool, _read(args.file), options, topic=settings.kafka_topic, actor="cli"
        )
        errors = await _errors(pool, summary["run_id"]) if summary["malformed_lines"] else []
    except StatementError as exc:
        print(f"paygate reconcile: {exc}", file=sys.stderr)
        return 2
    finally:
        await pool.close()
    if args.json:
        print(orjson.dumps({**summary, "errors": errors}, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(summary, errors))
    return 1 if args.fail_on_exceptions and summary["exceptions"] else 0


COMMAND = Command(
    "reconcile", "import a bank/provider statement (CSV) and match it", run, _arguments
)
