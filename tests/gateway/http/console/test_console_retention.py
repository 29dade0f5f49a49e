"""The console overview's retention block in a real browser: each retained table with its
rows, size and oldest data kept against its retention, and what the next maintenance run
removes (here: the expired references it will delete)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from gateway.security.auth import READ
from tests.gateway.http.console.test_console import sign_in
from tests.webhooks import payment_doc, post_webhook


async def test_overview_shows_retention_and_the_next_run(
    client: TestClient[Any, Any], db: asyncpg.Pool, page: Any
) -> None:
    status, _, _ = await post_webhook(client, payment_doc())
    assert status == 201
    now = datetime.now(UTC)
    await db.executemany(
        "INSERT INTO payment_service.payment_references"
        " (reference_number, payment_id, payment_date, payload_hash, created_at)"
        " VALUES ($1, $2, '2026-01-01', 'h', $3)",
        [(f"old-{age}", uuid.uuid4(), now - timedelta(days=age)) for age in (91, 100)],
    )
    await sign_in(page, client, [READ])
    rows = page.locator("#retention tr[data-table]")
    assert await rows.evaluate_all("rs => rs.map(r => r.dataset.table)") == [
        "payments", "webhook_events", "audit_log", "payment_references",
    ]  # fmt: skip
    refs = page.locator("#retention tr[data-table=payment_references]")
    cells = await refs.locator("td").all_inner_texts()
    assert cells[1] == "3"  # the webhook's reference and the two expired ones
    assert cells[3] == (now - timedelta(days=100)).strftime("%Y-%m-%d %H:%M")
    assert cells[4].endswith("(90 days)")
    assert cells[5] == "delete 2 expired references"
    assert await refs.get_attribute("class") == "bad"  # older data than retention keeps
    payments = await page.locator("#retention tr[data-table=payments] td").all_inner_texts()
    assert payments[1] == "1" and payments[3] == now.strftime("%Y-%m")
    assert payments[5] == "nothing"
