"""`paygate payments suspect-exponents`: payments recorded before sql/110 whose amount is
wrong by a power of ten, because their provider's currency exponent differs from the one
table every channel used then (gateway.db.exponent_audit).

By default every shipped preset with minor units is checked under its own
payment_channel (`adyen`, `checkout`, ...); a channel whose payment_channel differs from
its preset's name is named with `--channel VALUE=PRESET`. Nothing is changed: the list is
for an operator to correct with the provider's records at hand."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import Any

from gateway.config import Settings
from gateway.errors import ConfigError
from workers.cli.command import Command
from workers.cli.discovery import locate

MINOR_UNIT_PRESETS = ("adyen", "checkout", "paddle", "razorpay", "square", "stripe")


def _arguments(payments: argparse.ArgumentParser) -> None:
    actions = payments.add_subparsers(dest="payments_action", required=True)
    se = actions.add_parser(
        "suspect-exponents",
        help="payments recorded with a currency exponent their provider does not use",
    )
    se.add_argument(
        "--channel", action="append", default=[], metavar="VALUE=PRESET",
        help="check payment_channel VALUE against PRESET's table (repeatable); default: "
        + ", ".join(MINOR_UNIT_PRESETS) + " under their own names",
    )  # fmt: skip
    se.add_argument("--since", type=datetime.fromisoformat, help="payment_date from (inclusive)")
    se.add_argument("--until", type=datetime.fromisoformat, help="payment_date until (exclusive)")
    se.add_argument("--limit", type=int, default=1000, help="rows per channel (default 1000)")


def _channels(given: list[str]) -> list[tuple[str, str]] | None:
    if not given:
        return [(name, name) for name in MINOR_UNIT_PRESETS]
    pairs = []
    for item in given:
        value, sep, preset = item.partition("=")
        if not sep or not value or preset not in MINOR_UNIT_PRESETS:
            print(
                f"paygate payments: --channel {item!r}: expected VALUE=PRESET, PRESET one of "
                + ", ".join(MINOR_UNIT_PRESETS),
                file=sys.stderr,
            )
            return None
        pairs.append((value, preset))
    return pairs


def _print(found: list[Any]) -> None:
    if not found:
        print("no payments recorded with a wrong currency exponent")
        return
    print(f"{'REFERENCE':<32} {'CHANNEL':<12} {'CUR':<4} {'RECORDED':>20} {'MEANT':>20}  "
          "PAYMENT DATE")  # fmt: skip
    for s in found:
        meant = "not in its table" if s.meant is None else f"{s.meant:f}"
        print(f"{s.reference_number[:32]:<32} {s.payment_channel[:12]:<12} {s.currency:<4} "
              f"{s.recorded:>20f} {meant:>20}  {s.payment_date:%Y-%m-%d %H:%M}")  # fmt: skip
    groups: dict[tuple[str, str], int] = {}
    for s in found:
        groups[(s.payment_channel, s.currency)] = groups.get((s.payment_channel, s.currency), 0) + 1
    print(f"{len(found)} payment(s): "
          + "; ".join(f"{ch} {cur}: {n}" for (ch, cur), n in sorted(groups.items())))  # fmt: skip


async def run(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.db import exponent_audit
    from gateway.db.pool import create_pool
    from gateway.ingest.channels import load_preset
    from gateway.ingest.currencies import parse_table

    settings = await locate(settings, "DATABASE_URL")
    channels = _channels(args.channel)
    if channels is None:
        return 2
    pool = await create_pool(settings, min_size=1, max_size=2)
    try:
        found = []
        for value, preset in channels:
            table = parse_table(load_preset(preset)["minor_units"], _bad_preset)
            found += await exponent_audit.suspects(
                pool, value, table, since=args.since, until=args.until, limit=max(args.limit, 1)
            )
        _print(found)
        return 0
    finally:
        await pool.close()


def _bad_preset(key: str, problem: str) -> ConfigError:  # pragma: no cover - shipped presets
    return ConfigError(f"preset table {key}: {problem}")


COMMAND = Command("payments", "payments: suspect-exponents", run, _arguments)
