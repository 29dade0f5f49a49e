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
from gateway.http import (
    health,
    ops,
    ops_deliveries,
    ops_payments,
    ops_reconciliation,
    stats,
    webhook,
)
from gateway.http.console.routes import CONSOLE_ROUTES
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
    Route("GET", "/api/v1/payments", ops_payments.list_payments),
    Route(
        "GET", "/api/v1/payments/{key:" + ops_payments.KEY_PATTERN + "}", ops_payments.get_payment
    ),
    Route("GET", "/api/v1/deliveries", ops_deliveries.list_deliveries),
    Route("POST", "/api/v1/deliveries/replay", ops_deliveries.post_bulk_replay),
    Route("GET", "/api/v1/deliveries/{delivery_id}", ops_deliveries.get_delivery),
    Route("POST", "/api/v1/deliveries/{delivery_id}/replay", ops_deliveries.post_replay),
    Route("GET", "/api/v1/reconciliation/runs", ops_reconciliation.get_runs),
    Route("POST", "/api/v1/reconciliation/statements", ops.post_statement),
    Route("GET", "/api/v1/reconciliation/runs/{run_id}", ops.get_run),
    Route("GET", "/api/v1/reconciliation/exceptions", ops_reconciliation.get_exceptions),
    Route("POST", "/api/v1/reconciliation/exceptions/bulk", ops_reconciliation.post_bulk),
    Route(
        "GET",
        "/api/v1/reconciliation/exceptions/{kind}/{item_id}",
        ops_reconciliation.get_exception,
    ),
    Route(
        "POST",
        "/api/v1/reconciliation/exceptions/{kind}/{item_id}/assign",
        ops_reconciliation.post_assign,
    ),
    Route(
        "POST",
        "/api/v1/reconciliation/exceptions/{kind}/{item_id}/resolve",
        ops_reconciliation.post_resolve,
    ),
    Route(
        "POST",
        "/api/v1/reconciliation/exceptions/{kind}/{item_id}/comments",
        ops_reconciliation.post_comment,
    ),
    Route(
        "POST",
        "/api/v1/reconciliation/exceptions/{kind}/{item_id}/accept_suggestion",
        ops_reconciliation.post_accept,
    ),
    Route("GET", "/api/v1/dlq", ops.get_dlq),
    Route("POST", "/api/v1/dlq/replay", ops.post_dlq_replay),
    # console (B): the operator console's pages and actions (gateway/http/console)
    *(Route(method, path, handler) for method, path, handler in CONSOLE_ROUTES),
)


def add_routes(app: web.Application, settings: Settings) -> None:
    for route in ROUTES:
        if route.enabled_by is None or getattr(settings, route.enabled_by):
            add_route(app, route.method, route.path, route.handler)
    add_fallback_route(app)  # JSON 404/405; registered last
    app.on_startup.append(require_request_context)
