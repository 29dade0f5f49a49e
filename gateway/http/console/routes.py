"""The console's rows of the route table (gateway.http.routes adds them), each with who
may call it (gateway.security.access)."""

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
from gateway.security.access import Access

CONSOLE_SIGN_IN = Access.CONSOLE_SIGN_IN
CONSOLE_SESSION = Access.CONSOLE_SESSION
CONSOLE_READ = Access.CONSOLE_READ
CONSOLE_WRITE = Access.CONSOLE_WRITE

CONSOLE_ROUTES: tuple[tuple[str, str, Handler, Access], ...] = (
    ("GET", "/console", overview.overview_page, CONSOLE_READ),
    ("GET", "/console/login", auth.login_page, CONSOLE_SIGN_IN),
    ("POST", "/console/login", auth.login, CONSOLE_SIGN_IN),
    ("POST", "/console/logout", auth.logout, CONSOLE_SESSION),  # every role may sign out
    ("GET", "/console/static/{name}", static.static_file, CONSOLE_SIGN_IN),
    ("GET", "/console/payments", payments.search_page, CONSOLE_READ),
    ("GET", "/console/payments/{payment}", payments.payment_page, CONSOLE_READ),
    ("GET", "/console/deliveries", deliveries.list_page, CONSOLE_READ),
    ("GET", "/console/deliveries/{delivery_id}", deliveries.detail_page, CONSOLE_READ),
    # The confirmation page of an action is the action's: a read-only session is refused.
    ("GET", "/console/deliveries/{delivery_id}/replay", deliveries.confirm_page, CONSOLE_WRITE),
    ("POST", "/console/deliveries/{delivery_id}/replay", deliveries.replay, CONSOLE_WRITE),
    ("GET", "/console/reconciliation", reconciliation.runs_page, CONSOLE_READ),
    ("POST", "/console/reconciliation/upload", reconciliation.upload, CONSOLE_WRITE),
    ("GET", "/console/reconciliation/runs/{run_id}", reconciliation.run_page, CONSOLE_READ),
    ("GET", "/console/exceptions", reconciliation.queue_page, CONSOLE_READ),
    ("GET", "/console/exceptions.csv", reconciliation.export, CONSOLE_READ),
    ("POST", "/console/exceptions/bulk", reconciliation.bulk, CONSOLE_WRITE),
    ("GET", "/console/exceptions/{kind}/{item_id}", reconciliation.exception_page, CONSOLE_READ),
    ("POST", "/console/exceptions/{kind}/{item_id}/{action}", reconciliation.act, CONSOLE_WRITE),
    ("GET", "/console/dead-letters", dead_letters.list_page, CONSOLE_READ),
    ("POST", "/console/dead-letters/replay", dead_letters.replay, CONSOLE_WRITE),
)
