"""One guard for every CSV paygate writes (run items, the exception queue, the console's
export): a cell a spreadsheet would run as a formula is written as text.

Spreadsheets start a formula at `=`, `+`, `-` or `@`, and some treat a leading tab or
carriage return as skippable before one (OWASP's "CSV injection"). References come from
statements and webhooks, so `=HYPERLINK(...)` or `-2+3+cmd|...` must not come out live:
such a cell gets a leading `'`, which spreadsheets show as text and never evaluate. A
plain signed number (`-40.00`, a difference) is data, not a formula, and stays as it is.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Any

import orjson

_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n")
_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


def cell(value: Any) -> str:
    """`value` as the text of one CSV cell, never a formula."""
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        text = value.isoformat()
    elif isinstance(value, dict | list):
        text = orjson.dumps(value).decode()
    else:
        text = str(value)
    if text.startswith(_TRIGGERS) and _NUMBER.fullmatch(text) is None:
        return "'" + text
    return text


def row(values: list[Any] | tuple[Any, ...]) -> list[str]:
    return [cell(v) for v in values]
