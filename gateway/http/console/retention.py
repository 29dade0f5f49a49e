"""The overview's retention block: each retained table's rows, bytes and oldest data
against its retention, and what the next maintenance run removes (gateway.db.retention).
Partitions are counted from the planner's estimates above a small size and the report is
kept for a while, so the overview stays cheap on a large database."""

from __future__ import annotations

import time

from aiohttp import web

from gateway import appkeys
from gateway.db import retention

CACHE_SECONDS = 30.0
EXACT_COUNT_MAX_BYTES = 1024 * 1024  # count(*) only partitions this small on a page view
QUERY_TIMEOUT = 5.0
_cache: dict[int, tuple[float, list[dict[str, object]]]] = {}


async def retention_rows(request: web.Request) -> list[dict[str, object]]:
    key = id(request.app)
    cached = _cache.get(key)
    if cached is not None and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    app = request.app
    async with app[appkeys.POOL].acquire(timeout=QUERY_TIMEOUT) as conn:
        tables = await retention.retention_report(
            conn, app[appkeys.SETTINGS], exact_max_bytes=EXACT_COUNT_MAX_BYTES
        )
    rows: list[dict[str, object]] = [
        {
            "table": t.table,
            "rows": retention.rows_text(t.rows, t.exact),
            "size": retention.size_text(t.bytes),
            "oldest": retention.oldest_text(t),
            "keep_from": retention.keep_from_text(t),
            "retention": t.retention,
            "setting": t.setting,
            "next_run": retention.next_run_text(t),
            "overdue": t.overdue,
        }
        for t in tables
    ]
    _cache[key] = (time.monotonic(), rows)
    return rows
