"""`GET /metrics`: Prometheus text (or OpenMetrics, by `Accept`), every process of the host
merged in multiprocess mode. Also served alone on METRICS_PORT when that is set."""

from __future__ import annotations

from aiohttp import web

from gateway.observability.exposition import render_metrics


async def metrics_handler(request: web.Request) -> web.Response:
    body, content_type = render_metrics(request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type})
