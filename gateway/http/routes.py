"""The route table: every path paygate answers, in one place.

Each handler is wrapped in the request context (request id, the request gates that
guard the ops API, JSON errors); `require_request_context` refuses to start an app with
a route that is not. The catch-all goes last, so unknown paths and methods get JSON
404/405 too.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.config import Settings
from gateway.http import health, ops, stats, webhook
from gateway.http.context import add_fallback_route, add_route, require_request_context
from gateway.http.metrics import metrics_handler


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    enabled_by: str | None = None  # a boolean Settings field that must be true


ROUTES: tuple[Route, ...] = (
    Route("POST", "/api/v1/payments/webhook", webhook.handle_webhook),
    Route("POST", "/api/v1/payments/webhook/{channel}", webhook.handle_webhook),
    Route("GET", "/health", health.health),
    Route("GET", "/health/live", health.live),
    Route("GET", "/health/ready", health.ready),
    Route("GET", "/metrics", metrics_handler, enabled_by="enable_metrics"),
    Route("GET", "/api/v1/payments/stats", stats.stats_handler),
    Route("POST", "/api/v1/reconciliation/statements", ops.post_statement),
    Route("GET", "/api/v1/reconciliation/runs/{run_id}", ops.get_run),
    Route("GET", "/api/v1/dlq", ops.get_dlq),
    Route("POST", "/api/v1/dlq/replay", ops.post_dlq_replay),
)


def add_routes(app: web.Application, settings: Settings) -> None:
    for route in ROUTES:
        if route.enabled_by is None or getattr(settings, route.enabled_by):
            add_route(app, route.method, route.path, route.handler)
    add_fallback_route(app)  # JSON 404/405; registered last
    app.on_startup.append(require_request_context)
