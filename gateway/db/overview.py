"""The console overview's figures that no other module counts: deliveries per minute by
outcome for the last day (the chart), read from idx_webhook_events_received alone."""

from __future__ import annotations

from datetime import datetime

import asyncpg

_PER_MINUTE = """
SELECT date_trunc('minute', received_at) AS minute, outcome, count(*) AS n
FROM payment_service.webhook_events
WHERE received_at >= $1 AND received_at < $2
GROUP BY 1, 2
"""


async def deliveries_per_minute(
    db: asyncpg.Pool | asyncpg.Connection, since: datetime, until: datetime, timeout: float
) -> list[tuple[datetime, str, int]]:
    rows = await db.fetch(_PER_MINUTE, since, until, timeout=timeout)
    return [(r["minute"], r["outcome"], int(r["n"])) for r in rows]
