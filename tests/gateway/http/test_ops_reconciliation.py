"""Reconciliation runs and the exception workflow through the real app and Postgres:
open -> assigned -> resolved, comments, reason codes, bulk steps, CSV, every step audited."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from gateway.security.auth import READ
from tests.gateway.http.ops_helpers import auth, get, post
from tests.webhooks import payment_doc, post_webhook

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]
EXC = "/api/v1/reconciliation/exceptions"
TODAY = datetime.now(UTC).date().isoformat()


async def upload(client: TestClient[Any, Any], lines: list[str], source: str) -> dict[str, Any]:
    text = "reference_number,amount,payment_date\n" + "".join(f"{line}\n" for line in lines)
    resp = await client.post(
        "/api/v1/reconciliation/statements", params={"source": source, "keep_matched": "false"},
        data=text.encode(), headers=auth(client),
    )  # fmt: skip
    summary: dict[str, Any] = await resp.json()
    assert resp.status == 201, summary
    return summary


async def recorded(client: TestClient[Any, Any], ref: str, amount: str) -> str:
    status, data, _ = await post_webhook(
        client, payment_doc(ref, amount=amount, payment_date=TODAY)
    )
    assert status == 201, data
    return str(data["payment_id"])


async def setup_runs(client: TestClient[Any, Any], db: asyncpg.Pool) -> dict[str, Any]:
    """Two runs with exceptions, and one payment review."""
    paid = await recorded(client, "R-PAID", "100.00")
    await recorded(client, "R-SHORT", "50.00")
    first = await upload(client, [f"R-PAID,100.00,{TODAY}", f"R-SHORT,55.00,{TODAY}",
                                  f"R-GHOST,9.99,{TODAY}"], "bank-1")  # fmt: skip
    second = await upload(
        client, [f"R-PAID,100.00,{TODAY}", f"=HYPERLINK(1),1.00,{TODAY}"], "bank-2"
    )
    await db.execute(
        "INSERT INTO payment_service.payment_reviews (reference_number, source, reason)"
        " VALUES ('R-REVIEW', 'status_poller', 'provider_unknown')"
    )
    return {"paid": paid, "first": first["run_id"], "second": second["run_id"]}


async def test_runs_are_listed_newest_first_with_summaries(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    client = await make_client()
    runs = await setup_runs(client, db)
    status, page = await get(client, "/api/v1/reconciliation/runs", limit=1)
    assert status == 200
    assert [r["id"] for r in page["items"]] == [runs["second"]]
    assert page["items"][0]["source"] == "bank-2"
    assert page["items"][0]["summary"]["counts"]["missing_internal"] == 1
    status, page = await get(
        client, "/api/v1/reconciliation/runs", limit=1, cursor=page["next_cursor"]
    )
    assert [r["id"] for r in page["items"]] == [runs["first"]]
    status, page = await get(
        client, "/api/v1/reconciliation/runs", limit=1, cursor=page["next_cursor"]
    )
    assert page["items"] == [] and page["next_cursor"] is None


async def test_the_queue_lists_open_exceptions_across_runs_oldest_first(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    client = await make_client()
    runs = await setup_runs(client, db)
    status, queue = await get(client, EXC)
    assert status == 200, queue
    listed = [(e["kind"], e["reference_number"], e["category"]) for e in queue["items"]]
    # R-PAID matches in both runs (matched lines are not exceptions); the second
    # statement lacks R-SHORT.
    assert listed == [
        ("item", "R-SHORT", "amount_mismatch"),
        ("item", "R-GHOST", "missing_internal"),
        ("item", "=HYPERLINK(1)", "missing_internal"),
        ("item", "R-SHORT", "missing_in_statement"),
        ("review", "R-REVIEW", "provider_unknown"),
    ]
    assert {e["state"] for e in queue["items"]} == {"open"}
    status, page = await get(client, EXC, limit=2)
    seen = [e["id"] for e in page["items"]]
    while page["next_cursor"]:
        status, page = await get(client, EXC, limit=2, cursor=page["next_cursor"])
        seen += [e["id"] for e in page["items"]]
    assert seen == [e["id"] for e in queue["items"]]

    status, only = await get(client, EXC, kind="review")
    assert [e["reference_number"] for e in only["items"]] == ["R-REVIEW"]
    status, only = await get(client, EXC, run_id=runs["first"], category="amount_mismatch")
    [item] = only["items"]
    assert (item["difference"], item["statement_amount"]) == ("5.00", "55.00")
    status, only = await get(client, EXC, min_amount="9")
    # The difference when there is one (5.00), else the one amount known (9.99, 50.00).
    assert [e["reference_number"] for e in only["items"]] == ["R-GHOST", "R-SHORT"]
    await db.execute(
        "UPDATE payment_service.reconciliation_items SET created_at = now() - interval '3 days'"
        " WHERE reference_number = 'R-GHOST'"
    )
    status, only = await get(client, EXC, older_than_hours="48")
    assert [e["reference_number"] for e in only["items"]] == ["R-GHOST"]
    bad = (
        ({"state": "closed"}, "state"),
        ({"min_amount": "lots"}, "min_amount"),
        ({"run_id": "x"}, "run_id"),
        ({"older_than_hours": "nan"}, "older_than_hours"),
    )
    for params, field in bad:
        status, err = await get(client, EXC, **params)
        assert (status, err["field"]) == (422, field)


async def test_assign_comment_resolve_each_step_audited(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    client = await make_client()
    runs = await setup_runs(client, db)
    status, only = await get(client, EXC, category="missing_internal", reference_number="R-GHOST")
    [item] = only["items"]
    path = f"{EXC}/item/{item['id']}"

    status, after = await post(client, f"{path}/assign", {"assignee": "Dana Ops"}, subject="lead")
    assert (status, after["state"], after["assignee"]) == (200, "assigned", "Dana Ops")
    status, comment = await post(
        client, f"{path}/comments", {"body": "bank says typo"}, subject="dana"
    )
    assert (status, comment["actor"], comment["body"]) == (201, "dana", "bank says typo")

    status, err = await post(client, f"{path}/resolve", {"resolution": "matched_manually"})
    assert (status, err["field"]) == (422, "payment_id")
    unknown = {"resolution": "matched_manually", "payment_id": str(uuid.uuid4())}
    status, err = await post(client, f"{path}/resolve", unknown)
    assert (status, err["field"]) == (422, "payment_id")
    status, err = await post(client, f"{path}/resolve", {"resolution": "shrug"})
    assert (status, err["field"]) == (422, "resolution")

    status, done = await post(
        client, f"{path}/resolve",
        {"resolution": "matched_manually", "payment_id": runs["paid"], "note": "typo in ref"},
        subject="dana",
    )  # fmt: skip
    assert status == 200, done
    assert (done["state"], done["resolution"], done["resolved_by"]) == (
        "resolved",
        "matched_manually",
        "dana",
    )
    assert done["resolution_payment_id"] == runs["paid"]
    status, err = await post(client, f"{path}/resolve", {"resolution": "not_an_issue"})
    assert (status, err["error"]) == (409, "already_resolved")
    status, err = await post(client, f"{path}/assign", {"assignee": "someone"})
    assert (status, err["error"]) == (409, "already_resolved")

    status, detail = await get(client, path)
    assert status == 200
    assert [c["body"] for c in detail["comments"]] == ["bank says typo"]
    trail = [(a["action"], a["actor"]) for a in detail["audit"]]
    assert trail == [("exception_assigned", "lead"), ("exception_comment", "dana"),
                     ("exception_resolved", "dana")]  # fmt: skip
    assert detail["audit"][2]["details"]["note"] == "typo in ref"

    status, queue = await get(client, EXC)
    assert item["id"] not in [e["id"] for e in queue["items"] if e["kind"] == "item"]
    status, resolved = await get(client, EXC, state="resolved")
    assert [e["id"] for e in resolved["items"]] == [item["id"]]


async def test_a_review_is_closed_by_resolving_it(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    client = await make_client()
    await setup_runs(client, db)
    review_id = await db.fetchval("SELECT id FROM payment_service.payment_reviews")
    doc = {"resolution": "not_an_issue", "note": "provider test account"}
    status, done = await post(client, f"{EXC}/review/{review_id}/resolve", doc)
    assert (status, done["state"]) == (200, "resolved")
    row = await db.fetchrow("SELECT resolved_at, resolved_by FROM payment_service.payment_reviews")
    assert row is not None and row["resolved_at"] is not None and row["resolved_by"] == "alice"
    # The open-row index is free again: the poller can flag the same reference anew.
    await db.execute(
        "INSERT INTO payment_service.payment_reviews (reference_number, source, reason)"
        " VALUES ('R-REVIEW', 'status_poller', 'provider_unknown')"
    )


async def test_two_operators_resolving_at_once_one_wins(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    client = await make_client()
    await setup_runs(client, db)
    ident = await db.fetchval(
        "SELECT id FROM payment_service.reconciliation_items WHERE reference_number = 'R-GHOST'"
    )
    results = await asyncio.gather(
        post(client, f"{EXC}/item/{ident}/resolve", {"resolution": "written_off"}, subject="a"),
        post(client, f"{EXC}/item/{ident}/resolve", {"resolution": "fixed_upstream"}, subject="b"),
    )
    assert sorted(r[0] for r in results) == [200, 409]
    assert (
        await db.fetchval(
            "SELECT count(*) FROM payment_service.audit_log WHERE action = 'exception_resolved'"
        )
        == 1
    )


async def test_bulk_steps_report_each_exception(make_client: MakeClient, db: asyncpg.Pool) -> None:
    client = await make_client()
    await setup_runs(client, db)
    status, queue = await get(client, EXC, kind="item")
    ids = [e["id"] for e in queue["items"]]
    await post(client, f"{EXC}/item/{ids[0]}/resolve", {"resolution": "written_off"})
    targets = [{"kind": "item", "id": i} for i in ids] + [{"kind": "item", "id": 999999}]
    status, out = await post(client, f"{EXC}/bulk", {"action": "assign", "items": targets,
                                                     "assignee": "night shift"})  # fmt: skip
    assert status == 200, out
    assert (out["done"], out["failed"]) == (len(ids) - 1, 2)
    errors = {r["id"]: r.get("error") for r in out["results"] if not r["ok"]}
    assert errors == {ids[0]: "already_resolved", 999999: "exception_not_found"}
    status, mine = await get(client, EXC, assignee="night shift", state="assigned")
    assert sorted(e["id"] for e in mine["items"]) == sorted(ids[1:])
    status, out = await post(client, f"{EXC}/bulk", {"action": "resolve", "items": targets[1:3],
                                                     "resolution": "fixed_upstream"})  # fmt: skip
    assert out["done"] == 2
    assert (
        await db.fetchval(
            "SELECT count(*) FROM payment_service.audit_log WHERE action = 'exception_assigned'"
        )
        == len(ids) - 1
    )
    for doc, field in (({"action": "delete", "items": targets}, "action"),
                       ({"action": "assign", "items": []}, "items"),
                       ({"action": "assign", "items": targets}, "assignee"),
                       ({"action": "resolve", "items": [{"kind": "x", "id": 1}],
                         "resolution": "written_off"}, "kind")):  # fmt: skip
        status, err = await post(client, f"{EXC}/bulk", doc)
        assert (status, err["field"]) == (422, field), doc


async def test_csv_export_quotes_what_a_spreadsheet_would_run(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    client = await make_client()
    await setup_runs(client, db)
    resp = await client.get(
        EXC, params={"format": "csv", "state": "all"}, headers=auth(client, role=READ)
    )
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [r["reference_number"] for r in rows] == [
        "R-SHORT", "R-GHOST", "'=HYPERLINK(1)", "R-SHORT", "R-REVIEW",
    ]  # fmt: skip
    assert rows[0]["difference"] == "5.00" and rows[0]["state"] == "open"


async def test_workflow_steps_need_the_write_role(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    client = await make_client()
    status, err = await post(
        client, f"{EXC}/item/1/resolve", {"resolution": "written_off"}, role=READ
    )
    assert (status, err["error"]) == (403, "forbidden")
    status, err = await get(client, f"{EXC}/item/1")
    assert (status, err["error"]) == (404, "exception_not_found")
    status, err = await get(client, f"{EXC}/box/1")
    assert status == 404
