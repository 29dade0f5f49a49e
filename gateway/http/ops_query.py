"""What the ops API's handlers share: reading query strings (or a console form: any
str -> str mapping) and JSON bodies into values, a 422 naming the field otherwise; keyset
cursors; the acting principal; JSON answers that carry money as strings.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
from aiohttp import web

from gateway.domain import cursors
from gateway.errors import BadRequest, NotFound, ValidationError
from gateway.security.auth import PRINCIPAL

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
TEXT_MAX = 255
Query = Mapping[str, str]


def actor(request: web.Request) -> str:
    """Who is acting, for the audit log: the token's subject (a console session's too)."""
    return request[PRINCIPAL].subject if PRINCIPAL in request else "anonymous"


def text(q: Query, name: str, maximum: int = TEXT_MAX) -> str | None:
    value = q.get(name)
    if value is None or value == "":
        return None
    if len(value) > maximum:
        raise ValidationError(name, f"at most {maximum} characters")
    if "\x00" in value:
        raise ValidationError(name, "contains a NUL character")
    return value


def choice(q: Query, name: str, allowed: Iterable[str]) -> str | None:
    value = q.get(name) or None
    options = tuple(allowed)
    if value is not None and value not in options:
        raise ValidationError(name, "must be one of " + ", ".join(options))
    return value


def limit(q: Query, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    raw = q.get("limit")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError("limit", "must be an integer") from None
    if not 1 <= value <= maximum:
        raise ValidationError("limit", f"must be between 1 and {maximum}")
    return value


def instant(q: Query, name: str) -> datetime | None:
    """An ISO 8601 date or date-time; without an offset it is UTC."""
    raw = q.get(name)
    if not raw:
        return None
    return parse_instant(raw, name)


def parse_instant(raw: str, name: str) -> datetime:
    # An unencoded "+01:00" in a query string arrives as " 01:00".
    raw = raw.strip()
    if len(raw) > 10 and raw[-6:-5] == " ":
        raw = raw[:-6] + "+" + raw[-5:]
    try:
        if len(raw) == 10:
            value = datetime.combine(date.fromisoformat(raw), datetime.min.time())
        else:
            value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(name, "must be an ISO 8601 date or date-time") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if not 1900 <= value.year <= 9999:
        raise ValidationError(name, "out of range")
    return value


def time_range(q: Query) -> tuple[datetime | None, datetime | None]:
    """`from` (inclusive) and `to` (exclusive), in order."""
    since, until = instant(q, "from"), instant(q, "to")
    if since is not None and until is not None and until <= since:
        raise ValidationError("to", "must be later than from")
    return since, until


def decimal(q: Query, name: str) -> Decimal | None:
    raw = q.get(name)
    if not raw:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ValidationError(name, "must be a decimal number") from None
    if not value.is_finite() or value < 0 or value > Decimal("1e15"):
        raise ValidationError(name, "must be a finite number between 0 and 10^15")
    return value


def uuid_param(q: Query, name: str) -> uuid.UUID | None:
    raw = q.get(name)
    if not raw:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ValidationError(name, "must be a UUID") from None


def cursor(q: Query, shape: tuple[type, ...]) -> tuple[Any, ...] | None:
    raw = q.get("cursor")
    if not raw:
        return None
    if len(raw) > 1000:
        raise ValidationError("cursor", "not a cursor this API returned")
    return cursors.decode(raw, shape)


def cursor_uuid(raw: str) -> uuid.UUID:
    """The id part of a cursor that holds a UUID as text."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ValidationError("cursor", "not a cursor this API returned") from None


def next_cursor(rows: list[Any], page: int, *key: str) -> str | None:
    """The cursor after the last row of a full page; None when this page was the last."""
    if not rows or len(rows) < page:
        return None
    last = rows[-1]
    return cursors.encode(*(str(last[k]) if isinstance(last[k], uuid.UUID) else last[k]
                            for k in key))  # fmt: skip


def path_int(request: web.Request, name: str, code: str) -> int:
    raw = request.match_info[name]
    if not raw.isdigit() or len(raw) > 18 or int(raw) == 0:
        raise NotFound(f"no such {name}", code=code)
    return int(raw)


async def json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        doc = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        raise BadRequest("body is not valid JSON", code="invalid_json") from None
    if not isinstance(doc, dict):
        raise ValidationError("body", "must be a JSON object")
    return doc


def _default(value: Any) -> Any:
    if isinstance(value, Decimal | uuid.UUID):  # asyncpg's UUID is a subclass orjson skips
        return str(value)
    if isinstance(value, bytes | memoryview):
        return None  # raw bodies are rendered on purpose (render_body), never by accident
    raise TypeError(type(value).__name__)


def dumps(body: object) -> bytes:
    """JSON with money as strings (never floats), UUIDs as strings, times in RFC 3339."""
    return orjson.dumps(body, default=_default, option=orjson.OPT_NON_STR_KEYS)


def answer(body: object, status: int = 200) -> web.Response:
    return web.Response(body=dumps(body), status=status, content_type="application/json")


def records(rows: Iterable[Any]) -> list[dict[str, Any]]:
    return [dict(r) for r in rows]
