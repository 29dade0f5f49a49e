"""Issue 27 section 4, in a real browser against the real app: a refusal is shown as a
refusal, the overview counts every answer (and its headline is its table's total),
reference search takes a prefix in any case, lists page back as well as on, deliveries
filter by date and outcome and say why one was refused, a missing payment is "Not found",
and a 420 px window neither widens the page nor hides "Sign out"."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from gateway.security.auth import READ, WRITE
from tests.gateway.http.console.conftest import screenshot
from tests.gateway.http.console.test_console import base, sign_in
from tests.gateway.http.ops_helpers import BROKEN_MAPPING, partner_channels, partner_doc
from tests.webhooks import payment_doc, post_webhook, signed_headers

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]
QUICK_MS = 5000  # an element that is there appears at once: do not wait 30 s for one that is not


async def notice(page: Any) -> tuple[str, str]:
    """The notice's text and its kind (the class after `notice-`)."""
    box = page.locator("p.notice")
    classes = (await box.get_attribute("class") or "").split()
    kind = next((c.removeprefix("notice-") for c in classes if c.startswith("notice-")), "")
    return await box.inner_text(), kind


async def test_a_refused_replay_and_a_refused_statement_are_not_shown_as_success(
    make_client: MakeClient, db: asyncpg.Pool, page: Any, tmp_path: Path
) -> None:
    page.set_default_timeout(QUICK_MS)
    client = await make_client(channels_file=partner_channels(tmp_path, BROKEN_MAPPING))
    status, _, _ = await post_webhook(client, partner_doc("P-1"), channel="partner")
    assert status == 422
    delivery = await db.fetchval("SELECT id FROM payment_service.webhook_events")

    await sign_in(page, client, [WRITE])
    await page.goto(f"{base(client)}/console/deliveries/{delivery}/replay")
    page.once("dialog", lambda d: d.accept())
    await page.click("#confirm-replay")  # the mapping is still broken: 422 again
    text, kind = await notice(page)
    assert "422" in text and kind == "error", (text, kind)
    assert await page.get_attribute("p.notice", "role") == "alert"
    await screenshot(page, "replay_refused")

    statement = tmp_path / "statement.csv"
    statement.write_text("nothing;we;know\n1;2;3\n")
    await page.goto(base(client) + "/console/reconciliation")
    await page.set_input_files("input[name=statement]", str(statement))
    await page.click("#upload")
    text, kind = await notice(page)
    assert text.startswith("statement refused") and kind == "error", (text, kind)

    await page.goto(base(client) + "/console/exceptions")
    assert await page.locator("p.notice").count() == 0  # shown once, then gone


async def test_the_overview_counts_every_answer_and_its_headline_is_its_table_s_total(
    client: TestClient[Any, Any], db: asyncpg.Pool, page: Any
) -> None:
    page.set_default_timeout(QUICK_MS)
    doc = payment_doc()
    assert (await post_webhook(client, doc))[0] == 201
    assert (await post_webhook(client, payment_doc()))[0] == 201
    for _ in range(2):  # answered from memory: never stored
        assert (await post_webhook(client, doc))[0] == 200
    body = b'{"reference_number": "X"}'
    for _ in range(3):  # a wrong key: refused before anything is read
        bad = signed_headers(body, key=b"not-the-channel-secret-0123456789")
        assert (await post_webhook(client, None, raw=body, headers=bad))[0] == 401
    assert (await post_webhook(client, doc, channel="nosuchchannel"))[0] == 404

    await sign_in(page, client, [READ])
    headline = int(await page.locator(".card", has_text="Webhooks today").locator(".big")
                   .inner_text())  # fmt: skip
    table = page.locator("xpath=//h2[.='Today by outcome']/following::table[1]")
    answered = {}
    for row in await table.locator("tr:has(td)").all():
        cells = await row.locator("td").all_inner_texts()
        answered[cells[0]] = int(cells[1])
    assert answered == {"created": 2, "duplicate": 2, "unauthorized": 3, "not_found": 1}, (
        headline, answered)  # fmt: skip
    assert headline == sum(answered.values()) == 8
    assert int(await page.inner_text("#outcomes-total")) == headline
    # Only what was verified is stored: its link lists exactly those.
    await table.locator("text=created").click()
    assert await page.locator("#deliveries tr:has(td)").count() == 2


async def _payments(db: asyncpg.Pool, refs: list[str]) -> None:
    now = datetime.now(UTC)
    await db.executemany(
        """INSERT INTO payment_service.payments (id, reference_number, loan_account_number, cif,
               amount, payment_date, source, status, created_at, status_updated_at)
           VALUES ($1, $2, 'LA-1', 'CIF-1', 10.00, $3::timestamptz AT TIME ZONE 'UTC',
                   'webhook', 'succeeded', $3, $3)""",
        [(uuid.uuid4(), ref, now - timedelta(seconds=i)) for i, ref in enumerate(refs)],
    )


async def _rows(page: Any, table: str = "table") -> list[str]:
    return [t.split("\t")[0] for t in await page.locator(f"{table} tr:has(td)").all_inner_texts()]


async def test_reference_search_takes_a_prefix_in_any_case(
    client: TestClient[Any, Any], db: asyncpg.Pool, page: Any
) -> None:
    page.set_default_timeout(QUICK_MS)
    await _payments(db, ["INV-1001", "INV-1002", "INV-10030", "INV-2001", "XINV-10"])
    await sign_in(page, client, [READ])
    for typed, found in [("INV-10", {"INV-1001", "INV-1002", "INV-10030"}),
                         ("inv-1001", {"INV-1001"}), ("Inv-100", {"INV-1001", "INV-1002",
                         "INV-10030"}), ("INV-2001", {"INV-2001"}), ("inv-3", set())]:  # fmt: skip
        await page.goto(base(client) + "/console/payments")
        await page.fill("input[name=reference_number]", typed)
        await page.click("form.filters button")
        shown = set(await _rows(page)) - {"no payments match"}
        assert shown == found, (typed, shown)


async def test_lists_page_back_and_to_the_first_page(
    client: TestClient[Any, Any], db: asyncpg.Pool, page: Any
) -> None:
    page.set_default_timeout(QUICK_MS)
    refs = [f"PG-{i:03d}" for i in range(120)]  # newest first: PG-000 … PG-119
    await _payments(db, refs)
    now = datetime.now(UTC)
    await db.executemany(
        """INSERT INTO payment_service.webhook_events (received_at, channel, outcome, body)
           VALUES ($1, 'generic', 'created', '{}')""",
        [(now - timedelta(seconds=i),) for i in range(60)],
    )
    await db.executemany(
        """INSERT INTO payment_service.payment_reviews (reference_number, source, reason,
               state, created_at) VALUES ($1, 'status_poller', 'stuck', 'open', $2)""",
        [(f"RV-{i:03d}", now - timedelta(hours=1) + timedelta(seconds=i)) for i in range(55)],
    )
    await sign_in(page, client, [READ])
    await page.goto(base(client) + "/console/payments")
    first = await _rows(page)
    assert first == refs[:50] and await page.locator("a[rel=prev]").count() == 0
    await page.click("a[rel=next]")
    second = await _rows(page)
    assert second == refs[50:100]
    await page.click("a[rel=next]")
    assert await _rows(page) == refs[100:]
    assert await page.locator("a[rel=next]").count() == 0  # the last page says so
    await page.click("a[rel=prev]")
    assert await _rows(page) == second
    await page.click("a[rel=first]")
    assert await _rows(page) == first

    await page.goto(base(client) + "/console/deliveries")
    newest = await _rows(page)
    await page.click("a[rel=next]")
    assert len(await _rows(page)) == 10
    await page.click("a[rel=prev]")
    assert await _rows(page) == newest and await page.locator("a[rel=prev]").count() == 0

    await page.goto(base(client) + "/console/exceptions?kind=review")
    await page.click("a[rel=next]")
    assert len(await page.locator("table tr:has(td)").all()) == 5
    await page.click("a[rel=prev]")
    assert len(await page.locator("table tr:has(td)").all()) == 50
    assert await page.locator("a[rel=prev]").count() == 0


async def test_deliveries_filter_by_date_and_outcome_and_show_why_one_was_refused(
    make_client: MakeClient, db: asyncpg.Pool, page: Any, tmp_path: Path
) -> None:
    page.set_default_timeout(QUICK_MS)
    client = await make_client(channels_file=partner_channels(tmp_path, BROKEN_MAPPING))
    assert (await post_webhook(client, partner_doc("P-2"), channel="partner"))[0] == 422
    assert (await post_webhook(client, payment_doc("P-3")))[0] == 201
    old = datetime.now(UTC) - timedelta(days=3)
    await db.execute(
        """INSERT INTO payment_service.webhook_events (received_at, channel, outcome,
               reference_number, body) VALUES ($1, 'generic', 'created', 'OLD-1', '{}')""",
        old,
    )
    await sign_in(page, client, [READ])
    await page.goto(base(client) + "/console/deliveries")
    await page.fill("input[name=from]", old.date().isoformat())
    await page.fill("input[name=to]", old.date().isoformat())
    await page.click("form.filters button")
    rows = await page.locator("#deliveries tr:has(td)").all_inner_texts()
    assert len(rows) == 1 and "OLD-1" in rows[0]

    await page.goto(base(client) + "/console/deliveries")
    await page.select_option("select[name=outcome]", "invalid")
    await page.click("form.filters button")
    rows = await page.locator("#deliveries tr:has(td)").all_inner_texts()
    assert len(rows) == 1 and "P-2" in rows[0]
    assert "validation_error amount" in rows[0]  # the error column: code and field
    await screenshot(page, "deliveries")


async def test_a_missing_payment_is_not_found(
    client: TestClient[Any, Any], db: asyncpg.Pool, page: Any
) -> None:
    page.set_default_timeout(QUICK_MS)
    await sign_in(page, client, [READ])
    answer = await page.goto(base(client) + "/console/payments/INV-NOT-THERE")
    assert answer is not None and answer.status == 404
    assert await page.inner_text("h1") == "Not found"
    assert "payment_not_found" in await page.inner_text(".error")


async def test_a_420_pixel_window_fits_and_keeps_sign_out_in_reach(
    client: TestClient[Any, Any], db: asyncpg.Pool, page: Any
) -> None:
    page.set_default_timeout(QUICK_MS)
    status, created, _ = await post_webhook(
        client, payment_doc(f"REF-{uuid.uuid4().hex}-{uuid.uuid4().hex}", cif="CIF-" + "9" * 16)
    )
    assert status == 201
    delivery = await db.fetchval("SELECT id FROM payment_service.webhook_events")
    await page.set_viewport_size({"width": 420, "height": 800})
    await sign_in(page, client, [WRITE])
    for path in ("/console", "/console/payments", "/console/deliveries",
                 f"/console/deliveries/{delivery}", f"/console/payments/{created['payment_id']}",
                 "/console/reconciliation", "/console/exceptions",
                 "/console/dead-letters"):  # fmt: skip
        await page.goto(base(client) + path)
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 420, (path, width)
        button = page.locator("header button", has_text="Sign out")
        box = await button.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 420, (path, box)
        on_top = await page.evaluate(
            "([x, y]) => document.elementFromPoint(x, y)?.textContent?.trim()",
            [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2],
        )
        assert on_top == "Sign out", (path, on_top)  # nothing drawn over it
    await page.goto(base(client) + "/console")
    await screenshot(page, "overview_narrow")
