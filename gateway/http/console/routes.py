"""The console's rows of the route table (gateway.http.routes adds them)."""

from __future__ import annotations

from aiohttp.typedefs import Handler

from gateway.http.console import (
    auth,
    dead_letters,
    deliveries,
    overview,
    payments,
    reconciliation,
    static,
)

CONSOLE_ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/console", overview.overview_page),
    ("GET", "/console/login", auth.login_page),
    ("POST", "/console/login", auth.login),
    ("POST", "/console/logout", auth.logout),
    ("GET", "/console/static/{name}", static.static_file),
    ("GET", "/console/payments", payments.search_page),
    ("GET", "/console/payments/{payment}", payments.payment_page),
    ("GET", "/console/deliveries", deliveries.list_page),
    ("GET", "/console/deliveries/{delivery_id}", deliveries.detail_page),
    ("GET", "/console/deliveries/{delivery_id}/replay", deliveries.confirm_page),
    ("POST", "/console/deliveries/{delivery_id}/replay", deliveries.replay),
    ("GET", "/console/reconciliation", reconciliation.runs_page),
    ("POST", "/console/reconciliation/upload", reconciliation.upload),
    ("GET", "/console/reconciliation/runs/{run_id}", reconciliation.run_page),
    ("GET", "/console/exceptions", reconciliation.queue_page),
    ("GET", "/console/exceptions.csv", reconciliation.export),
    ("POST", "/console/exceptions/bulk", reconciliation.bulk),
    ("GET", "/console/exceptions/{kind}/{item_id}", reconciliation.exception_page),
    ("POST", "/console/exceptions/{kind}/{item_id}/{action}", reconciliation.act),
    ("GET", "/console/dead-letters", dead_letters.list_page),
    ("POST", "/console/dead-letters/replay", dead_letters.replay),
)
