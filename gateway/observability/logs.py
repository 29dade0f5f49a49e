"""JSON-lines logging with the request id of the request being served.

One object per line (time, level, logger, message, plus request_id / channel /
outcome / duration_ms when known). Nothing here ever formats a secret or a payload:
callers pass only codes and identifiers.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from gateway.db.errors import describe_text

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

_EXTRA_FIELDS = ("channel", "outcome", "duration_ms", "status", "method", "path", "worker")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id_var.get()
        if rid:
            out["request_id"] = rid
        for name in _EXTRA_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()

    def formatException(self, ei: Any) -> str:
        """Tracebacks as Python prints them, except that a database error (anywhere in the
        chain) is shown described: its own text carries DETAIL, which quotes row values."""
        return "".join(_format_chain(ei[1]))


def _format_chain(exc: BaseException, seen: set[int] | None = None) -> list[str]:
    seen = seen if seen is not None else set()
    seen.add(id(exc))
    lines: list[str] = []
    earlier = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if earlier is not None and id(earlier) not in seen:
        lines += _format_chain(earlier, seen)
        lines.append(
            "\nThe above exception was the direct cause of the following exception:\n\n"
            if exc.__cause__ is not None
            else "\nDuring handling of the above exception, another exception occurred:\n\n"
        )
    lines.append("Traceback (most recent call last):\n")
    lines += traceback.format_tb(exc.__traceback__)
    if isinstance(exc, asyncpg.PostgresError):
        lines.append(describe_text(exc) + "\n")
    else:
        lines += traceback.format_exception_only(type(exc), exc)
    return lines


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party chatter stays at warning unless we debug.
    for noisy in ("aiokafka", "asyncio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
