"""`GET /api/v1/payments/stats`: seed 004's processing statistics (an ops token;
gateway.observability.stats says where each figure comes from)."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from gateway import appkeys
from gateway.errors import ServiceUnavailable
from gateway.http.context import json_response

_DB_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def stats_handler(request: web.Request) -> web.Response:
    try:
        app = request.app
        body = await app[appkeys.STATS].get(app[appkeys.POOL], app[appkeys.OUTCOMES])
    except _DB_ERRORS:
        raise ServiceUnavailable(
            "statistics need the database", code="database_unavailable"
        ) from None
    return json_response(body)
