"""What reconciliation concludes from the lines banks and providers really send (issue 34),
each row of the issue's table through the real app: statements uploaded to
`POST /api/v1/reconciliation/statements`, payments recorded by webhook or by the writer's
own batch statement, the run's items and the exception queue read back through the API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from gateway.db.payments import Candidate, record_batch
from gateway.domain.model import Payment
from tests.gateway.http.ops_helpers import auth, get
from tests.webhooks import payment_doc, post_webhook

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]
STATEMENTS = "/api/v1/reconciliation/statements"
EXCEPTIONS = "/api/v1/reconciliation/exceptions"
HEAD = "reference_number,amount,payment_date,status,currency\n"


async def seed(db: asyncpg.Pool, *rows: tuple[str, str, str, str]) -> None:
    """Payments (reference, amount, day, status) recorded as the writer records them."""
    cands = [
        Candidate(Payment(ref, "LA-1", "CIF-1", Decimal(amt), datetime.fromisoformat(day),
                          status=status))
        for ref, amt, day, status in rows
    ]  # fmt: skip
    async with db.acquire() as conn:
        await record_batch(conn, cands, source="webhook", topic="t", actor="test")


async def upload(
    client: TestClient[Any, Any], lines: str, expect: int = 201, **params: str
) -> dict[str, Any]:
    resp = await client.post(STATEMENTS, params=params, data=(HEAD + lines).encode(),
                             headers=auth(client))  # fmt: skip
    body: dict[str, Any] = await resp.json()
    assert resp.status == expect, body
    return body


async def items(client: TestClient[Any, Any], run_id: str) -> list[dict[str, Any]]:
    status, body = await get(client, f"/api/v1/reconciliation/runs/{run_id}")
    assert status == 200
    return list(body["items"])


def by_ref(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i["reference_number"]: i for i in found}


async def test_split_settlement_lines_are_one_group_that_matches(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    await seed(db, ("SPLIT-1", "100.00", "2026-10-05", "succeeded"))
    client = await make_client()
    run = await upload(client, "SPLIT-1,60.00,2026-10-05,,\nSPLIT-1,40.00,2026-10-05,,\n")
    assert run["counts"]["matched"] == 1 and run["exceptions"] == 0
    assert run["malformed_lines"] == 0  # well-formed lines are never "malformed"
    [item] = await items(client, run["run_id"])
    assert (item["category"], item["statement_amount"]) == ("matched", "100.00")
    assert item["details"]["lines"] == [2, 3]


async def test_a_repeated_line_is_a_duplicate_in_the_exception_queue(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    await seed(db, ("TWICE-1", "120.00", "2026-10-05", "succeeded"))
    client = await make_client()
    run = await upload(client, "TWICE-1,120.00,2026-10-05,,\nTWICE-1,120.00,2026-10-05,,\n")
    assert run["counts"]["duplicate_in_statement"] == 1 and run["counts"]["matched"] == 0
    assert run["malformed_lines"] == 0
    _, queue = await get(client, EXCEPTIONS, category="duplicate_in_statement")
    [item] = queue["items"]
    assert (item["reference_number"], item["difference"]) == ("TWICE-1", "120.00")
    assert item["details"]["lines"] == [2, 3]


async def test_refunds_and_reversals_net_against_the_payments_final_status(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    await seed(
        db,
        ("REFUND-ONLY", "80.00", "2026-10-05", "refunded"),
        ("SALE-AND-REFUND", "70.00", "2026-10-05", "refunded"),
        ("BY-TYPE", "30.00", "2026-10-05", "reversed"),
        ("NOT-REFUNDED", "15.00", "2026-10-05", "succeeded"),
    )
    client = await make_client()
    run = await upload(
        client,
        "REFUND-ONLY,-80.00,2026-10-05,refunded,\n"
        "SALE-AND-REFUND,70.00,2026-10-05,succeeded,\n"
        "SALE-AND-REFUND,-70.00,2026-10-06,refunded,\n"
        "BY-TYPE,30.00,2026-10-05,reversed,\n"
        "NOT-REFUNDED,-15.00,2026-10-06,refunded,\n",
    )
    found = by_ref(await items(client, run["run_id"]))
    assert found["REFUND-ONLY"]["category"] == "matched"
    assert found["SALE-AND-REFUND"]["category"] == "matched"
    assert found["SALE-AND-REFUND"]["statement_amount"] == "0.00"
    assert found["BY-TYPE"]["category"] == "matched"  # a reversal line takes money back
    assert found["NOT-REFUNDED"]["category"] == "status_mismatch"  # we never heard of it


async def test_a_type_column_signs_the_amount(make_client: MakeClient, db: asyncpg.Pool) -> None:
    await seed(db, ("TYPED", "45.00", "2026-10-05", "refunded"))
    client = await make_client()
    lines = "ref,amt,date,kind\nTYPED,45.00,2026-10-05,sale\nTYPED,45.00,2026-10-06,refund\n"
    resp = await client.post(
        STATEMENTS, data=lines.encode(), headers=auth(client),
        params={"map": "reference_number=ref,amount=amt,payment_date=date,type=kind"},
    )  # fmt: skip
    run = await resp.json()
    assert resp.status == 201 and run["counts"]["matched"] == 1, run


async def test_a_currency_that_differs_from_the_payments_is_an_exception(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    await seed(
        db,
        ("CUR-USD", "50.00", "2026-10-05", "succeeded"),
        ("CUR-EUR", "50.00", "2026-10-05", "succeeded"),
        ("CUR-NONE", "50.00", "2026-10-05", "succeeded"),
    )
    await db.execute(
        "UPDATE payment_service.payments SET currency = CASE reference_number"
        " WHEN 'CUR-USD' THEN 'USD' WHEN 'CUR-EUR' THEN 'EUR' END"
    )
    client = await make_client()
    run = await upload(
        client,
        "CUR-USD,50.00,2026-10-05,,EUR\nCUR-EUR,50.00,2026-10-05,,EUR\nCUR-NONE,50.00,2026-10-05,,EUR\n",
    )
    assert run["counts"]["currency_mismatch"] == 1 and run["counts"]["matched"] == 2
    _, queue = await get(client, EXCEPTIONS, category="currency_mismatch")
    [item] = queue["items"]
    assert item["reference_number"] == "CUR-USD"
    assert item["details"] == {"currency": "EUR", "payment_currency": "USD"}


async def test_one_stray_line_does_not_widen_the_inferred_period(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    await seed(
        db,
        *[(f"CORE-{d}-{i}", "10.00", f"2026-10-0{d}", "succeeded") for d in (5, 6, 7)
          for i in (1, 2)],
        ("STRAY", "10.00", "2026-10-07", "succeeded"),
        ("UNRELATED-1", "11.00", "2026-10-08", "succeeded"),
        ("UNRELATED-2", "12.00", "2026-10-08", "succeeded"),
    )  # fmt: skip
    client = await make_client()
    lines = "".join(f"CORE-{d}-{i},10.00,2026-10-0{d},,\n" for d in (5, 6, 7) for i in (1, 2))
    run = await upload(client, lines + "STRAY,10.00,2026-10-08,,\n")
    assert run["period"] == {"start": "2026-10-05", "end": "2026-10-07", "inferred": True}
    assert run["counts"]["missing_in_statement"] == 0  # not UNRELATED-1/2
    assert run["counts"]["outside_period"] == 1
    [item] = [i for i in await items(client, run["run_id"]) if i["category"] != "matched"]
    assert (item["category"], item["reference_number"]) == ("outside_period", "STRAY")
    assert item["details"]["line_date"] == "2026-10-08"


async def test_lines_outside_an_explicit_period_are_flagged(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    await seed(
        db,
        ("EARLY", "10.00", "2026-10-04", "succeeded"),
        ("INSIDE", "10.00", "2026-10-06", "succeeded"),
        ("LATE", "10.00", "2026-10-08", "succeeded"),
    )
    client = await make_client()
    run = await upload(
        client,
        "EARLY,10.00,2026-10-04,,\nINSIDE,10.00,2026-10-06,,\nLATE,10.00,2026-10-08,,\n",
        period_start="2026-10-05", period_end="2026-10-07",
    )  # fmt: skip
    assert run["counts"]["matched"] == 1 and run["counts"]["outside_period"] == 2
    _, queue = await get(client, EXCEPTIONS, category="outside_period")
    assert sorted(i["reference_number"] for i in queue["items"]) == ["EARLY", "LATE"]


async def test_a_date_difference_beyond_the_tolerance_is_noted(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    await seed(
        db,
        ("NEAR", "10.00", "2026-10-05", "succeeded"),
        ("FAR", "10.00", "2026-10-05", "succeeded"),
    )
    client = await make_client()
    run = await upload(
        client, "NEAR,10.00,2026-10-07,,\nFAR,10.00,2026-10-09,,\n",
        period_start="2026-10-05", period_end="2026-10-09",
    )  # fmt: skip
    assert run["counts"]["matched"] == 2 and run["notes"]["date_difference"] == 1
    found = by_ref(await items(client, run["run_id"]))
    assert found["NEAR"]["details"] is None  # 2 days: within RECONCILE_DATE_TOLERANCE_DAYS=3
    assert found["FAR"]["details"] == {"date_difference_days": 4}
    run = await upload(
        client, "NEAR,10.00,2026-10-07,,\n", date_tolerance_days="1",
        period_start="2026-10-05", period_end="2026-10-07",
    )  # fmt: skip
    assert by_ref(await items(client, run["run_id"]))["NEAR"]["details"] == {
        "date_difference_days": 2
    }


async def test_a_case_only_difference_is_a_suggested_match_an_operator_accepts(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    await seed(db, ("REC-CASE-1", "25.00", "2026-10-05", "succeeded"))
    client = await make_client()
    run = await upload(client, "rec-case-1,25.00,2026-10-05,,\n")
    assert run["notes"]["suggested_match"] == 1
    found = by_ref(await items(client, run["run_id"]))
    line, ours = found["rec-case-1"], found["REC-CASE-1"]
    assert line["category"] == "missing_internal"
    payment_id = await db.fetchval("SELECT id FROM payment_service.payments")
    assert line["details"]["suggested_payment_id"] == str(payment_id)
    assert line["details"]["suggested_reference"] == "REC-CASE-1"
    assert ours["details"]["suggested_item_id"] == line["id"]

    resp = await client.post(
        f"{EXCEPTIONS}/item/{line['id']}/accept_suggestion", json={}, headers=auth(client)
    )
    accepted = await resp.json()
    assert resp.status == 200, accepted
    assert (accepted["state"], accepted["resolution"]) == ("resolved", "matched_manually")
    assert accepted["resolution_payment_id"] == str(payment_id)
    _, queue = await get(client, EXCEPTIONS)
    assert queue["items"] == []  # both sides of the pair are resolved
    audit = await db.fetch(
        "SELECT actor, details FROM payment_service.audit_log"
        " WHERE action = 'exception_resolved' ORDER BY id"
    )
    assert [a["details"]["id"] for a in audit] == [line["id"], ours["id"]]
    assert all(a["actor"] == "alice" and a["details"]["suggestion"] == "case_only" for a in audit)


async def test_a_webhook_reference_with_a_trailing_space_matches_its_statement_line(
    client: TestClient[Any, Any], db: asyncpg.Pool
) -> None:
    doc = payment_doc("REC-TRAIL-1 ", payment_date="2026-10-05T10:00:00Z")
    status, data, _ = await post_webhook(client, doc)
    assert status == 201, data
    assert await db.fetchval("SELECT reference_number FROM payment_service.payments") == (
        "REC-TRAIL-1"
    )
    run = await upload(client, f"REC-TRAIL-1,{doc['amount']},2026-10-05,,\n")
    assert run["counts"]["matched"] == 1, run


async def test_look_alike_references_are_refused_naming_the_field(
    client: TestClient[Any, Any], db: asyncpg.Pool
) -> None:
    status, data, _ = await post_webhook(client, payment_doc("INV-1001"))
    assert status == 201
    for sneaky in ("INV-1001\u202e\u200b", "INV\u200d-1001", "\ufeffINV-1001"):
        status, data, _ = await post_webhook(client, payment_doc(sneaky))
        assert (status, data["error"], data["field"]) == (
            422, "validation_error", "reference_number",
        ), data  # fmt: skip
    doc = payment_doc("INV-1002", loan_account_number="LA\u202e1")
    status, data, _ = await post_webhook(client, doc)
    assert (status, data["field"]) == (422, "loan_account_number")
    assert await db.fetchval("SELECT count(*) FROM payment_service.payments") == 1
    run = await upload(client, "INV-1001\u202e,1.00,2026-10-05,,\n", expect=201)
    assert run["malformed_lines"] == 1


async def test_a_failed_payment_matches_a_zero_or_failed_line(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    await seed(
        db,
        ("FAILED-ZERO", "25.00", "2026-10-05", "failed"),
        ("FAILED-LINE", "25.00", "2026-10-05", "failed"),
        ("FAILED-PAID", "25.00", "2026-10-05", "failed"),
        ("FAILED-ABSENT", "25.00", "2026-10-05", "failed"),
    )
    client = await make_client()
    run = await upload(
        client,
        "FAILED-ZERO,0.00,2026-10-05,failed,\nFAILED-LINE,25.00,2026-10-05,failed,\n"
        "FAILED-PAID,25.00,2026-10-05,,\n",
    )
    found = by_ref(await items(client, run["run_id"]))
    assert found["FAILED-ZERO"]["category"] == "matched"
    assert found["FAILED-LINE"]["category"] == "matched"  # a failed line settles nothing
    assert found["FAILED-PAID"]["category"] == "amount_mismatch"  # money for a failure
    assert found["FAILED-PAID"]["details"] == {"expected": "0.00"}
    assert "FAILED-ABSENT" not in found  # absent: nothing to settle, nothing missing


async def test_a_fee_the_bank_rounded_differently_matches_with_a_note(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    await seed(db, ("FEE-TRUNC", "33.33", "2026-10-05", "succeeded"))
    client = await make_client()
    run = await upload(client, "FEE-TRUNC,32.67,2026-10-05,,\n", fee_percent="2")
    assert run["counts"]["matched_with_fee"] == 1 and run["notes"]["fee_rounding"] == 1
    [item] = await items(client, run["run_id"])
    assert item["details"] == {"fee_rounding": "0.01"}
