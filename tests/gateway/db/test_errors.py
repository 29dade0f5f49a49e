"""Database errors described for logs and error records: SQLSTATE, message and hint,
never the row values a constraint's DETAIL or a data error's message quotes."""

from __future__ import annotations

import logging
import sys
import uuid

import asyncpg
import pytest

from gateway.db.errors import describe, describe_text
from gateway.observability.logs import JsonFormatter

SECRET_VALUE = "ROW-VALUE-7c1f"


async def _error(db: asyncpg.Pool, sql: str, *args: object) -> asyncpg.PostgresError:
    with pytest.raises(asyncpg.PostgresError) as info:
        await db.execute(sql, *args)
    return info.value


async def test_a_missing_function_is_named_with_its_argument_types(db: asyncpg.Pool) -> None:
    exc = await _error(db, "SELECT no_such_function($1::text, 'x')", "a")
    d = describe(exc)
    assert (d["error"], d["sqlstate"]) == ("UndefinedFunctionError", "42883")
    assert d["message"] == "function no_such_function(text, unknown) does not exist"
    assert "argument types" in d["hint"]
    text = describe_text(exc)
    assert text.startswith("UndefinedFunctionError 42883: function no_such_function(text, unknown)")
    assert "hint: No function matches" in text


async def test_a_unique_violation_keeps_the_constraint_and_drops_the_row(db: asyncpg.Pool) -> None:
    sql = (
        "INSERT INTO payment_service.payment_references "
        "(reference_number, payment_id, payment_date, payload_hash) VALUES ($1, $2, now(), 'h')"
    )
    await db.execute(sql, SECRET_VALUE, uuid.uuid4())
    exc = await _error(db, sql, SECRET_VALUE, uuid.uuid4())
    assert SECRET_VALUE in str(exc)  # asyncpg's own text quotes the key: why describe exists
    d = describe(exc)
    assert (d["sqlstate"], d["constraint"]) == ("23505", "payment_references_pkey")
    assert "detail" not in d
    assert SECRET_VALUE not in str(d) and SECRET_VALUE not in describe_text(exc)


async def test_a_data_error_keeps_its_kind_and_drops_the_value(db: asyncpg.Pool) -> None:
    exc = await _error(db, "SELECT $1::text::int", SECRET_VALUE)
    d = describe(exc)
    assert d["sqlstate"] == "22P02"
    assert d["message"] == 'invalid input syntax for type integer: "…"'
    assert SECRET_VALUE not in describe_text(exc)


async def test_a_logged_traceback_of_a_database_error_holds_no_row_values(
    db: asyncpg.Pool,
) -> None:
    sql = "SELECT * FROM (VALUES ($1::text)) v(x) WHERE x::int > 0"
    exc = await _error(db, sql, SECRET_VALUE)
    try:
        raise RuntimeError("a batch failed") from exc
    except RuntimeError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "InvalidTextRepresentationError 22P02" in line
    assert "RuntimeError: a batch failed" in line and "direct cause" in line
    assert SECRET_VALUE not in line


def test_an_error_from_outside_the_server_keeps_its_class_and_message() -> None:
    assert describe(ConnectionRefusedError(111, "Connect call failed")) == {
        "error": "ConnectionRefusedError",
        "message": "[Errno 111] Connect call failed",
    }
    assert describe_text(TimeoutError()) == "TimeoutError"
