"""The console's reconciliation pages in a real browser against the real app (issue 27,
sections 3 and 4; issue 34's suggested match): a statement uploaded twice leaves the
queue and the payment's timeline as they were, a failed run says why, a run is titled by
its file, exception references lead to the payment, and a case-only suggestion is
accepted with an audit trail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from gateway.security.auth import WRITE
from tests.gateway.http.console.conftest import screenshot
from tests.gateway.http.console.test_console import base, sign_in
from tests.webhooks import payment_doc, post_webhook

LINES = "ref;amt;date\n{ok};125.50;{day}\n{off};130.00;{day}\nNOT-OURS;5.00;{day}\n"
MAP = "reference_number=ref,amount=amt,payment_date=date"


async def upload(page: Any, path: Path, *, mapped: bool = True) -> str:
    await page.click("nav >> text=Reconciliation")
    if mapped:
        await page.fill("input[name=delimiter]", ";")
        await page.fill("input[name=map]", MAP)
    await page.set_input_files("input[name=statement]", str(path))
    await page.click("#upload")
    return str(await page.inner_text(".notice"))


async def statement(client: TestClient[Any, Any], tmp_path: Path, name: str) -> tuple[Path, str]:
    """Two payments recorded by webhook, and a statement matching one of them."""
    doc = payment_doc("CON-OK")
    await post_webhook(client, doc)
    await post_webhook(client, payment_doc("CON-OFF"))
    path = tmp_path / name
    path.write_text(LINES.format(ok="CON-OK", off="CON-OFF", day=doc["payment_date"][:10]))
    return path, str(doc["reference_number"])


async def queue_rows(page: Any) -> int:
    await page.click("nav >> text=Exceptions")
    return int(await page.locator("table tr input[name=item]").count())


async def test_a_statement_uploaded_twice_leaves_the_queue_and_the_timeline_unchanged(
    client: TestClient[Any, Any], db: asyncpg.Pool, page: Any, tmp_path: Path
) -> None:
    path, ok = await statement(client, tmp_path, "statement.csv")
    await sign_in(page, client, [WRITE], subject="rita")
    assert "imported: 2 exception(s)" in await upload(page, path)
    before = await queue_rows(page)
    assert before == 2
    notice = await upload(page, path)
    assert "already imported" in notice
    await screenshot(page, "reconciliation-already-imported")
    assert await queue_rows(page) == before
    await page.goto(base(client) + f"/console/payments/{ok}")
    timeline = await page.inner_text("#timeline")
    assert timeline.count("matched") == 1, timeline


async def test_a_failed_run_says_why(
    client: TestClient[Any, Any], db: asyncpg.Pool, page: Any, tmp_path: Path
) -> None:
    path = tmp_path / "no-reference.csv"
    path.write_text("amount,payment_date\n1.00,2026-10-05\n")
    await sign_in(page, client, [WRITE])
    assert "statement refused" in await upload(page, path, mapped=False)
    await page.click("nav >> text=Reconciliation")
    runs = await page.inner_text("table")
    assert "failed" in runs and "the header has no column 'reference_number'" in runs, runs
    await page.click("table >> a >> nth=0")
    assert "the header has no column 'reference_number'" in await page.inner_text("#run-error")


async def test_a_run_is_titled_by_its_file_name(
    client: TestClient[Any, Any], db: asyncpg.Pool, page: Any, tmp_path: Path
) -> None:
    path, _ = await statement(client, tmp_path, "bank-2026-10.csv")
    await sign_in(page, client, [WRITE])
    await upload(page, path)
    assert "bank-2026-10.csv" in await page.inner_text("h1")
    await page.click("nav >> text=Reconciliation")
    assert "bank-2026-10.csv" in await page.inner_text("table")
    assert "console upload" not in await page.inner_text("table")


async def test_exception_references_lead_to_the_payment_page(
    client: TestClient[Any, Any], db: asyncpg.Pool, page: Any, tmp_path: Path
) -> None:
    path, _ = await statement(client, tmp_path, "statement.csv")
    await sign_in(page, client, [WRITE])
    await upload(page, path)
    await page.click("nav >> text=Exceptions")
    await page.click("a.ref >> text=CON-OFF")
    assert "/console/payments/" in page.url
    assert "CON-OFF" in await page.inner_text("h1")
    await page.click("nav >> text=Exceptions")
    await page.click("a.ref >> text=NOT-OURS")  # not recorded: the search for it
    assert "reference_number=NOT-OURS" in page.url


async def test_a_case_only_suggestion_is_accepted_in_the_console(
    client: TestClient[Any, Any], db: asyncpg.Pool, page: Any, tmp_path: Path
) -> None:
    doc = payment_doc("REC-CASE-1")
    await post_webhook(client, doc)
    path = tmp_path / "case.csv"
    path.write_text(f"ref;amt;date\nrec-case-1;{doc['amount']};{doc['payment_date'][:10]}\n")
    await sign_in(page, client, [WRITE], subject="rita")
    await upload(page, path)
    await page.click("text=missing_internal (1)")
    await page.click("text=open it")
    assert "REC-CASE-1" in await page.inner_text("#suggestion")
    await screenshot(page, "exception-suggestion")
    await page.click("#accept-suggestion")
    assert "suggested match accepted" in await page.inner_text(".notice")
    assert await page.inner_text("#state") == "resolved"
    assert "matched_manually" in await page.inner_text("#resolution")
    assert "exception_resolved by rita" in await page.inner_text("#trail")
    states = await db.fetch(
        "SELECT category, state, resolution_payment_id FROM payment_service.reconciliation_items"
    )
    payment_id = await db.fetchval("SELECT id FROM payment_service.payments")
    assert {(r["category"], r["state"], r["resolution_payment_id"]) for r in states} == {
        ("missing_internal", "resolved", payment_id),
        ("missing_in_statement", "resolved", payment_id),
    }
