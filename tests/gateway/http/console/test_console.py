"""The console in a real browser against the real app and Postgres: sign-in and roles,
search to a payment's timeline, replaying a stored 422 once its channel's mapping is
fixed, a statement's exception resolved with a note, a dead letter replayed, and an
action without its CSRF token refused."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from gateway import appkeys
from gateway.security.auth import READ, WRITE, mint_token
from tests.gateway.http.console.conftest import screenshot
from tests.gateway.http.ops_helpers import (
    BROKEN_MAPPING,
    fix_partner_mapping,
    partner_channels,
    partner_doc,
)
from tests.webhooks import payment_doc, post_webhook

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


def base(client: TestClient[Any, Any]) -> str:
    return str(client.make_url("")).rstrip("/")


def token_for(client: TestClient[Any, Any], roles: list[str], subject: str = "olga") -> str:
    return mint_token(client.server.app[appkeys.SETTINGS].admin_jwt_secret, subject, roles)


async def sign_in(page: Any, client: TestClient[Any, Any], roles: list[str],
                  subject: str = "olga") -> None:  # fmt: skip
    await page.goto(base(client) + "/console/login")
    await page.fill("textarea[name=token]", token_for(client, roles, subject))
    await page.click("button[type=submit]")


async def count(db: asyncpg.Pool, sql: str, *args: Any) -> int:
    return int(await db.fetchval(sql, *args))


async def test_sign_in_and_a_token_without_a_role_is_refused(
    client: TestClient[Any, Any], db: asyncpg.Pool, page: Any
) -> None:
    await page.goto(base(client) + "/console/payments")
    assert page.url.endswith("/console/login")  # no session: sent to sign in
    await screenshot(page, "login")

    await sign_in(page, client, ["payments:admin"])  # not an ops role
    assert "no ops role" in await page.inner_text(".error")
    cookies = [c["name"] for c in await page.context.cookies()]
    assert "paygate_session" not in cookies

    # A day of traffic for the chart: a daily wave of created deliveries, duplicates at a
    # fifth of them, and a burst of refusals (as a broken mapping makes) in one hour.
    await db.execute(
        """INSERT INTO payment_service.webhook_events (received_at, channel, outcome, body)
           SELECT now() - make_interval(mins => m), 'generic', o, '{}'
           FROM generate_series(1, 1430) m,
                LATERAL (VALUES ('created', 12 + (9 * sin(m / 229.0))::int + m % 5),
                                ('duplicate', (3 + 2 * sin(m / 229.0))::int),
                                ('invalid', CASE WHEN m BETWEEN 300 AND 360 THEN 6 ELSE 0 END)
                        ) v(o, n),
                LATERAL generate_series(1, v.n) k"""
    )
    by_outcome = "SELECT outcome, count(*) AS n FROM payment_service.webhook_events GROUP BY 1"
    totals = {r["outcome"]: r["n"] for r in await db.fetch(by_outcome)}
    await sign_in(page, client, [READ])
    assert page.url.endswith("/console")
    assert await page.inner_text("h1") == "Overview"
    assert await page.locator("svg.chart polyline").count() == 3  # one line per outcome
    legend = await page.inner_text("figcaption")
    for outcome, n in totals.items():
        assert f"{outcome} ({n})" in legend
    session = next(c for c in await page.context.cookies() if c["name"] == "paygate_session")
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert "olga (read only)" in await page.inner_text("header")
    await screenshot(page, "overview")


async def test_a_read_only_session_cannot_act(
    client: TestClient[Any, Any], db: asyncpg.Pool, page: Any
) -> None:
    await post_webhook(client, payment_doc())
    delivery = await db.fetchval("SELECT id FROM payment_service.webhook_events")
    await sign_in(page, client, [READ])
    await page.goto(f"{base(client)}/console/deliveries/{delivery}")
    assert await page.locator("text=Replay…").count() == 0  # not offered
    # Not by URL either: the confirmation page belongs to the action (it was served to a
    # read-only session, and only its button's POST was refused).
    answer = await page.goto(f"{base(client)}/console/deliveries/{delivery}/replay")
    assert answer is not None and answer.status == 403
    assert await page.locator("#confirm-replay").count() == 0
    assert "ops:write" in await page.inner_text(".error")  # refused by the role, as the API
    csrf = await page.get_attribute("header input[name=csrf_token]", "value")
    posted = await page.request.post(
        f"{base(client)}/console/deliveries/{delivery}/replay",
        form={"csrf_token": csrf or ""}, max_redirects=0,
    )  # fmt: skip
    assert posted.status == 403
    assert await count(db, "SELECT count(*) FROM payment_service.delivery_replays") == 0


async def test_search_then_the_payment_page_and_its_timeline(
    client: TestClient[Any, Any], db: asyncpg.Pool, page: Any
) -> None:
    ref = f"INV-{uuid.uuid4().hex[:8]}"
    for i in range(3):
        await post_webhook(client, payment_doc(f"{ref}-other-{i}", cif="CIF-OTHER"))
    created_doc = payment_doc(ref, cif="CIF-42", amount="99.95", status="pending")
    status, created, _ = await post_webhook(client, created_doc)
    assert status == 201
    # One document sent twice (payment_doc stamps the current second: built twice, the
    # copies could differ in payment_date and the second would be a conflict).
    succeeded = payment_doc(ref, cif="CIF-42", amount="99.95", status="succeeded",
                            payment_date=created_doc["payment_date"])  # fmt: skip
    await post_webhook(client, succeeded)
    await post_webhook(client, succeeded)

    await sign_in(page, client, [READ])
    await page.click("nav >> text=Payments")
    await page.fill("input[name=cif]", "CIF-42")
    await page.click("form.filters button")
    rows = page.locator("table tr:has(td)")
    assert await rows.count() == 1
    await screenshot(page, "payments")
    await page.click(f"text={ref}")
    assert page.url.endswith(f"/console/payments/{created['payment_id']}")
    timeline = (await page.inner_text("#timeline")).lower()
    # the deliveries that touched it (the third one was answered from memory, unstored),
    # what the audit log holds, and its events with their state (no relay runs here)
    assert timeline.count("delivery") == 2, timeline
    for entry in ("created", "duplicate", "status_change", "payment.recorded",
                  "payment.status_changed", "pending"):  # fmt: skip
        assert entry in timeline, (entry, timeline)
    assert "created by generic" in timeline and "status_change by webhook" in timeline
    assert "succeeded" in await page.inner_text("dl.facts")
    await screenshot(page, "payment")


async def test_a_stored_422_is_replayed_after_its_mapping_is_fixed_and_recorded_once(
    make_client: MakeClient, db: asyncpg.Pool, page: Any, tmp_path: Path
) -> None:
    path = partner_channels(tmp_path, BROKEN_MAPPING)
    client = await make_client(channels_file=path)
    ref = f"P-{uuid.uuid4().hex[:10]}"
    status, data, _ = await post_webhook(client, partner_doc(ref), channel="partner")
    assert (status, data["field"]) == (422, "amount")
    assert await count(db, "SELECT count(*) FROM payment_service.payments") == 0

    await sign_in(page, client, [WRITE])
    await page.goto(base(client) + "/console/deliveries?outcome=invalid")
    await screenshot(page, "deliveries")
    await page.click("table tr:has(td) >> nth=0 >> a")
    assert '"amount_value": "42.10"' in await page.inner_text("#raw-body")  # what was sent
    assert '"field":"amount"' in await page.inner_text("#refusal")
    await screenshot(page, "delivery")

    fix_partner_mapping(client, path)
    for expected in ("201 created", "200 duplicate"):  # a second replay records nothing new
        await page.click("text=Replay…")
        await screenshot(page, "replay_confirm")
        page.once("dialog", lambda d: d.accept())
        await page.click("#confirm-replay")
        assert expected in await page.inner_text(".notice")
    assert await count(db, "SELECT count(*) FROM payment_service.payments WHERE "
                           "reference_number = $1", ref) == 1  # fmt: skip
    replays = await db.fetch(
        "SELECT actor, status FROM payment_service.delivery_replays ORDER BY id"
    )
    assert [(r["actor"], r["status"]) for r in replays] == [("olga", 201), ("olga", 200)]
    audited = await count(db, "SELECT count(*) FROM payment_service.audit_log WHERE "
                              "action = 'delivery_replay' AND actor = 'olga'")  # fmt: skip
    assert audited == 2
    assert "olga" in await page.inner_text("#replays")


STATEMENT = "ref;amt;date\n{ok};125.50;{day}\n{off};130.00;{day}\nNOT-OURS-{n};5.00;{day}\n"


async def test_statement_upload_to_a_resolved_exception_with_a_note(
    client: TestClient[Any, Any], db: asyncpg.Pool, page: Any, tmp_path: Path
) -> None:
    ok, off = f"R-{uuid.uuid4().hex[:8]}", f"R-{uuid.uuid4().hex[:8]}"
    doc = payment_doc(ok)
    await post_webhook(client, doc)
    await post_webhook(client, payment_doc(off))
    statement = tmp_path / "statement.csv"
    statement.write_text(STATEMENT.format(ok=ok, off=off, day=doc["payment_date"][:10], n=1))

    await sign_in(page, client, [WRITE], subject="rita")
    await page.click("nav >> text=Reconciliation")
    await page.fill("input[name=delimiter]", ";")
    await page.fill("input[name=map]", "reference_number=ref,amount=amt,payment_date=date")
    await page.set_input_files("input[name=statement]", str(statement))
    await screenshot(page, "reconciliation")
    await page.click("#upload")
    assert "imported: 2 exception(s)" in await page.inner_text(".notice")
    await page.click("text=amount_mismatch (1)")
    await screenshot(page, "run")
    await page.click("text=open it")
    await page.select_option("#resolution-code", "written_off")
    await page.fill("#resolution-note", "bank fee, agreed with finance")
    await page.click("#resolve")
    assert await page.inner_text("#state") == "resolved"
    assert "bank fee, agreed with finance" in await page.inner_text("#resolution")
    assert "exception_resolved by rita" in await page.inner_text("#trail")
    await screenshot(page, "exception")
    audit = await db.fetchrow(
        "SELECT actor, details FROM payment_service.audit_log WHERE action = 'exception_resolved'"
    )
    assert audit["actor"] == "rita"
    assert audit["details"]["resolution"] == "written_off"
    assert audit["details"]["note"] == "bank fee, agreed with finance"
    await page.click("nav >> text=Exceptions")
    queue = await page.inner_text("table")
    assert "missing_internal" in queue and "amount_mismatch" not in queue  # resolved: gone
    await screenshot(page, "exceptions")


async def test_a_dead_letter_is_replayed_from_the_console(
    client: TestClient[Any, Any], db: asyncpg.Pool, page: Any
) -> None:
    dead = await db.fetchval(
        """INSERT INTO payment_service.outbox (event_id, event_type, topic, key, payload,
               attempts, last_error, dead_lettered_at)
           VALUES ($1, 'payment.recorded', 'payment.events', 'REF-DEAD', '{}', 10,
                   'MessageSizeTooLargeError', now()) RETURNING id""",
        uuid.uuid4(),
    )
    await sign_in(page, client, [WRITE], subject="dmitri")
    await page.click("nav >> text=Dead letters")
    assert "MessageSizeTooLargeError" in await page.inner_text("table")
    await screenshot(page, "dead_letters")
    await page.check(f"input[name=id][value='{dead}']")
    await page.click("#replay-selected")
    assert "re-queued 1 event(s)" in await page.inner_text(".notice")
    row = await db.fetchrow("SELECT dead_lettered_at, attempts FROM payment_service.outbox")
    assert row["dead_lettered_at"] is None and row["attempts"] == 0
    actor = await db.fetchval(
        "SELECT actor FROM payment_service.audit_log WHERE action = 'dlq_replay'"
    )
    assert actor == "dmitri"


async def test_an_action_without_its_csrf_token_is_refused(
    client: TestClient[Any, Any], db: asyncpg.Pool, page: Any
) -> None:
    await db.execute(
        """INSERT INTO payment_service.outbox (event_id, event_type, topic, key, payload,
               attempts, dead_lettered_at)
           VALUES ($1, 'payment.recorded', 'payment.events', 'R', '{}', 10, now())""",
        uuid.uuid4(),
    )
    await sign_in(page, client, [WRITE])
    url = base(client) + "/console/dead-letters/replay"
    # The session cookie goes along (same browser context); the token does not.
    without = await page.request.post(url, form={"all": "1"}, max_redirects=0)
    assert without.status == 403
    assert "csrf_failed" in await without.text()
    wrong = await page.request.post(url, form={"all": "1", "csrf_token": "0" * 64},
                                    max_redirects=0)  # fmt: skip
    assert wrong.status == 403
    token = await page.get_attribute("input[name=csrf_token]", "value")
    foreign = await page.request.post(url, form={"all": "1", "csrf_token": token or ""},
                                      headers={"Origin": "https://evil.example"},
                                      max_redirects=0)  # fmt: skip
    assert foreign.status == 403
    assert await count(db, "SELECT count(*) FROM payment_service.outbox "
                           "WHERE dead_lettered_at IS NOT NULL") == 1  # fmt: skip
    ok = await page.request.post(url, form={"all": "1", "csrf_token": token or ""},
                                 max_redirects=0)  # fmt: skip
    assert ok.status == 303  # the same request with its token goes through
    assert await count(db, "SELECT count(*) FROM payment_service.outbox "
                           "WHERE dead_lettered_at IS NOT NULL") == 0  # fmt: skip
