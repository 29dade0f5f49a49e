"""What a database failure says in logs and error records: enough to diagnose it, and
nothing that could hold payment data or a secret.

Kept: the SQLSTATE, the server's message and its hint (for 42883, the function's name and
argument types and what to do), and the names the server reports (constraint, column,
table). Dropped: the DETAIL of data errors (class 22) and integrity violations (class 23),
which quotes row values ("Key (reference_number)=(INV-1) already exists", "Failing row
contains ..."); and, for class 22, the quoted value in the message itself
(`invalid input syntax for type integer: "..."`). asyncpg puts DETAIL and HINT into
`str(exc)`, so nothing logs a Postgres error through `str()`: it goes through here (the
JSON log formatter does so for tracebacks too).
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg

# SQLSTATE classes whose DETAIL (and, for 22, message) can quote the row's values.
_VALUE_CLASSES = ("22", "23")
_QUOTED = re.compile(r'"(?:[^"]|"")*"')
_TEXT_MAX = 500


def _message(exc: asyncpg.PostgresError) -> str:
    message = str(getattr(exc, "message", None) or str(exc).split("\n", 1)[0])
    if str(exc.sqlstate or "").startswith("22"):
        message = _QUOTED.sub('"…"', message)
    return message[:_TEXT_MAX]


def describe(exc: BaseException) -> dict[str, Any]:
    """A JSON-ready description: error class, sqlstate, message, hint (and detail where
    safe); for an error that did not come from the server, its class and message."""
    out: dict[str, Any] = {"error": type(exc).__name__}
    if isinstance(exc, asyncpg.PostgresError):
        out["sqlstate"] = exc.sqlstate
        out["message"] = _message(exc)
        for name in ("hint", "constraint_name", "column_name", "table_name", "schema_name"):
            value = getattr(exc, name, None)
            if value:
                out[name.removesuffix("_name") if name != "schema_name" else "schema"] = str(value)[
                    :_TEXT_MAX
                ]
        detail = getattr(exc, "detail", None)
        if detail and not str(exc.sqlstate or "").startswith(_VALUE_CLASSES):
            out["detail"] = str(detail)[:_TEXT_MAX]
    else:
        text = str(exc)
        if text:
            out["message"] = text[:_TEXT_MAX]
    return out


def describe_text(exc: BaseException) -> str:
    """One line for a log: `UndefinedFunctionError 42883: function f(text) does not exist
    (hint: ...)`."""
    d = describe(exc)
    head = d["error"] + (f" {d['sqlstate']}" if "sqlstate" in d else "")
    text = f"{head}: {d['message']}" if d.get("message") else head
    extras = [f"{k}: {d[k]}" for k in ("detail", "hint", "constraint", "column", "table") if k in d]
    return text + (f" ({'; '.join(extras)})" if extras else "")
