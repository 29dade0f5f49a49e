"""The console's rows of the route table (gateway.http.routes adds them), each with who
may call it (gateway.http.console.session's gate reads `CONSOLE_ACCESS`)."""

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
from gateway.http.console.session import PUBLIC, SIGNED_IN
from gateway.security.tokens import READ, WRITE

CONSOLE_ROUTES: tuple[tuple[str, str, Handler, str], ...] = (
    ("GET", "/console", overview.overview_page, READ),
    ("GET", "/console/login", auth.login_page, PUBLIC),
    ("POST", "/console/login", auth.login, PUBLIC),
    ("POST", "/console/logout", auth.logout, SIGNED_IN),  # every role may sign out
    ("GET", "/console/static/{name}", static.static_file, PUBLIC),
    ("GET", "/console/payments", payments.search_page, READ),
    ("GET", "/console/payments/{payment}", payments.payment_page, READ),
    ("GET", "/console/deliveries", deliveries.list_page, READ),
    ("GET", "/console/deliveries/{delivery_id}", deliveries.detail_page, READ),
    # The confirmation page of an action is the action's: a read-only session is refused.
    ("GET", "/console/deliveries/{delivery_id}/replay", deliveries.confirm_page, WRITE),
    ("POST", "/console/deliveries/{delivery_id}/replay", deliveries.replay, WRITE),
    ("GET", "/console/reconciliation", reconciliation.runs_page, READ),
    ("POST", "/console/reconciliation/upload", reconciliation.upload, WRITE),
    ("GET", "/console/reconciliation/runs/{run_id}", reconciliation.run_page, READ),
    ("GET", "/console/exceptions", reconciliation.queue_page, READ),
    ("GET", "/console/exceptions.csv", reconciliation.export, READ),
    ("POST", "/console/exceptions/bulk", reconciliation.bulk, WRITE),
    ("GET", "/console/exceptions/{kind}/{item_id}", reconciliation.exception_page, READ),
    ("POST", "/console/exceptions/{kind}/{item_id}/{action}", reconciliation.act, WRITE),
    ("GET", "/console/dead-letters", dead_letters.list_page, READ),
    ("POST", "/console/dead-letters/replay", dead_letters.replay, WRITE),
)

CONSOLE_ACCESS = {(method, path): access for method, path, _, access in CONSOLE_ROUTES}
