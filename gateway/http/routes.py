"""The route table: every path paygate answers, in one place.

Each route declares who may call it (`access`, gateway.security.access): the request
context every handler is wrapped in (request id, the gate for that access, JSON errors)
decides from the route aiohttp matched, never from the path text. A route without an
access cannot be written (the field has no default); `check_routes` refuses to build or
start an app with a route outside the request context or an access without a gate. The
catch-all goes last, so unknown paths and methods get JSON 404/405 too.
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
    ops_tokens,
    stats,
    webhook,
)
from gateway.http.console.routes import CONSOLE_ROUTES
from gateway.http.context import add_fallback_route, add_route, check_routes, require_routes_checked
from gateway.http.metrics import metrics_handler
from gateway.security.access import Access

PUBLIC, SIGNED = Access.PUBLIC, Access.SIGNED
OPS_READ, OPS_WRITE = Access.OPS_READ, Access.OPS_WRITE


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    access: Access
    enabled_by: str | None = None  # a boolean Settings field that must be true


ROUTES: tuple[Route, ...] = (
    Route("POST", "/api/v1/payments/webhook", webhook.handle_webhook, SIGNED),
    Route("POST", "/api/v1/payments/webhook/{channel}", webhook.handle_webhook, SIGNED),
    Route("GET", "/health", health.health, PUBLIC),
    Route("GET", "/health/live", health.live, PUBLIC),
    Route("GET", "/health/ready", health.ready, PUBLIC),
    Route("GET", "/metrics", metrics_handler, PUBLIC, enabled_by="enable_metrics"),
    Route("GET", "/api/v1/payments/stats", stats.stats_handler, OPS_READ),
    Route("GET", "/api/v1/payments", ops_payments.list_payments, OPS_READ),
    Route(
        "GET",
        "/api/v1/payments/{key:" + ops_payments.KEY_PATTERN + "}",
        ops_payments.get_payment,
        OPS_READ,
    ),
    Route("GET", "/api/v1/deliveries", ops_deliveries.list_deliveries, OPS_READ),
    Route("POST", "/api/v1/deliveries/replay", ops_deliveries.post_bulk_replay, OPS_WRITE),
    Route("GET", "/api/v1/deliveries/{delivery_id}", ops_deliveries.get_delivery, OPS_READ),
    Route("POST", "/api/v1/deliveries/{delivery_id}/replay", ops_deliveries.post_replay, OPS_WRITE),
    Route("GET", "/api/v1/reconciliation/runs", ops_reconciliation.get_runs, OPS_READ),
    Route("POST", "/api/v1/reconciliation/statements", ops.post_statement, OPS_WRITE),
    Route("GET", "/api/v1/reconciliation/runs/{run_id}", ops.get_run, OPS_READ),
    Route("GET", "/api/v1/reconciliation/exceptions", ops_reconciliation.get_exceptions, OPS_READ),
    Route(
        "POST", "/api/v1/reconciliation/exceptions/bulk", ops_reconciliation.post_bulk, OPS_WRITE
    ),
    Route(
        "GET",
        "/api/v1/reconciliation/exceptions/{kind}/{item_id}",
        ops_reconciliation.get_exception,
        OPS_READ,
    ),
    Route(
        "POST",
        "/api/v1/reconciliation/exceptions/{kind}/{item_id}/assign",
        ops_reconciliation.post_assign,
        OPS_WRITE,
    ),
    Route(
        "POST",
        "/api/v1/reconciliation/exceptions/{kind}/{item_id}/resolve",
        ops_reconciliation.post_resolve,
        OPS_WRITE,
    ),
    Route(
        "POST",
        "/api/v1/reconciliation/exceptions/{kind}/{item_id}/comments",
        ops_reconciliation.post_comment,
        OPS_WRITE,
    ),
    Route(
        "POST",
        "/api/v1/reconciliation/exceptions/{kind}/{item_id}/accept_suggestion",
        ops_reconciliation.post_accept,
        OPS_WRITE,
    ),
    Route("GET", "/api/v1/dlq", ops.get_dlq, OPS_READ),
    Route("POST", "/api/v1/dlq/replay", ops.post_dlq_replay, OPS_WRITE),
    Route("POST", "/api/v1/tokens/revoke", ops_tokens.post_revoke, OPS_WRITE),
    # console (B): the operator console's pages and actions (gateway/http/console)
    *(Route(method, path, handler, access) for method, path, handler, access in CONSOLE_ROUTES),
)


# Routes whose body is a statement (spooled to a file): their body deadline is
# RECONCILE_UPLOAD_TIMEOUT_SECONDS, not CLIENT_TIMEOUT_SECONDS.
STATEMENT_UPLOADS = frozenset(
    {("POST", "/api/v1/reconciliation/statements"), ("POST", "/console/reconciliation/upload")}
)


def add_routes(app: web.Application, settings: Settings) -> None:
    for route in ROUTES:
        if route.enabled_by is None or getattr(settings, route.enabled_by):
            upload = (route.method, route.path) in STATEMENT_UPLOADS
            add_route(app, route.method, route.path, route.handler, route.access, upload=upload)
    add_fallback_route(app)  # JSON 404/405; registered last
    check_routes(app)  # refuses to build
    app.on_startup.append(require_routes_checked)  # and routes added after the factory
