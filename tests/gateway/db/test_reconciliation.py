"""Statement reconciliation: pure parsing, and the full import + match through the API
against real Postgres."""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from gateway.db.payments import Candidate, record_batch
from gateway.domain.model import Payment
from gateway.domain.statements import (
    StatementError,
    StatementOptions,
    StatementParser,
    expected_after_fee,
    parse_delimiter,
    parse_mapping,
)
from gateway.security.auth import mint_token
from tests.events import queued_events

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
AUTH = {
    "Authorization": "Bearer "
    + mint_token("test-admin-jwt-secret-0123456789abcdef", "ops-test", ["ops:write"])
}


def _parse(text: str, chunk: int = 7, **opts: Any) -> tuple[StatementParser, list[Any]]:
    parser = StatementParser(StatementOptions(**opts))
    data = text.encode()
    records = []
    for i in range(0, len(data), chunk):
        records.extend(parser.feed(data[i : i + chunk]))
    records.extend(parser.finish())
    return parser, records


def test_parser_maps_columns_and_reports_malformed_lines_by_number() -> None:
    text = (
        "\ufeffRef;Amt;Date;State\r\n"
        "A-1;100.00;2026-11-01;succeeded\r\n"
        ";5.00;2026-11-01;\r\n"
        "A-2;12.345;2026-11-01;\r\n"
        "\r\n"
        "A-3;7;2026-11-02T10:00:00+02:00;\r\n"
        "A-4;1.00;yesterday;\r\n"
        "A-5;1.00;2026-11-02;lost\r\n"
        '"A;6";2.50;2026-11-03;FAILED'
    )
    mapping = parse_mapping("reference_number=ref, amount=amt,payment_date=date,status=state")
    parser, records = _parse(text, delimiter=";", mapping=mapping)
    assert [r[:4] for r in records] == [
        (2, "A-1", Decimal("100.00"), datetime(2026, 11, 1)),
        (6, "A-3", Decimal("7"), datetime(2026, 11, 2, 10)),  # the provider's wall clock
        (9, "A;6", Decimal("2.50"), datetime(2026, 11, 3)),
    ]
    assert records[0][4] == "succeeded" and records[2][4] == "failed"
    assert [e["line"] for e in parser.errors] == [3, 4, 7, 8]
    assert (parser.total, parser.malformed) == (7, 4)
    assert "reference_number" in parser.errors[0]["error"]


def test_parser_survives_an_unreadable_line() -> None:
    huge = "x" * 200_000
    parser, records = _parse(
        f"reference_number,amount,payment_date\nA,{huge},2026-01-01\nB,1.00,2026-01-01\n",
        chunk=4096,
    )
    assert [r[1] for r in records] == ["B"]
    assert [e["line"] for e in parser.errors] == [2]


def test_parser_refuses_a_statement_without_the_required_columns() -> None:
    with pytest.raises(StatementError, match="amount"):
        _parse("reference_number,payment_date\nA,2026-01-01\n")
    with pytest.raises(StatementError):
        _parse("")


def test_options_helpers() -> None:
    assert parse_delimiter("tab") == "\t"
    with pytest.raises(ValueError):
        parse_delimiter(";;")
    with pytest.raises(ValueError):
        parse_mapping("colour=red")
    assert expected_after_fee(Decimal("100.00"), Decimal("2.9"), Decimal("0.30")) == Decimal(
        "96.80"
    )


async def _seed(db: asyncpg.Pool, rows: list[tuple[str, str, str, str]]) -> None:
    cands = [
        Candidate(
            Payment(
                ref, "LA-1", "CIF-1", Decimal(amount), datetime.fromisoformat(day), status=status
            )
        )
        for ref, amount, day, status in rows
    ]
    async with db.acquire() as conn:
        await record_batch(conn, cands, source="webhook", topic="t", actor="test")


async def test_statement_upload_classifies_every_line(
    make_client: ClientFactory, db: asyncpg.Pool
) -> None:
    await _seed(
        db,
        [
            ("P-MATCH", "100.00", "2026-11-01", "succeeded"),
            ("P-FEE", "100.00", "2026-11-01", "succeeded"),
            ("P-AMOUNT", "50.00", "2026-11-02", "succeeded"),
            ("P-STATUS", "20.00", "2026-11-02", "pending"),
            ("P-MISSING", "30.00", "2026-11-03 15:00:00", "succeeded"),
            ("P-FAILED", "30.00", "2026-11-03", "failed"),
            ("P-OUTSIDE", "30.00", "2026-10-15", "succeeded"),
        ],
    )
    statement = (
        "ref;amt;date;state\n"
        "P-MATCH;100.00;2026-11-01;succeeded\n"
        "P-FEE;96.80;2026-11-01;\n"
        "P-AMOUNT;55.00;2026-11-02;\n"
        "P-STATUS;20.00;2026-11-02;succeeded\n"
        "X-UNKNOWN;9.99;2026-11-03;\n"
        "P-BAD;1,5;2026-11-03;\n"
    )
    client = await make_client()
    resp = await client.post(
        "/api/v1/reconciliation/statements",
        params={"delimiter": ";", "fee_percent": "2.9", "fee_fixed": "0.30",
                "source": "bank-2026-11", "period_start": "2026-11-01",
                "period_end": "2026-11-03",
                "map": "reference_number=ref,amount=amt,payment_date=date,status=state"},
        data=statement.encode(), headers=AUTH,
    )  # fmt: skip
    summary = await resp.json()
    assert resp.status == 201, summary
    assert summary["counts"] == {
        "matched": 1,
        "matched_with_fee": 1,
        "amount_mismatch": 1,
        "status_mismatch": 1,
        "missing_internal": 1,
        "missing_in_statement": 1,
        "duplicate_in_statement": 0,
        "currency_mismatch": 0,
        "outside_period": 0,
    }
    assert (summary["total_lines"], summary["malformed_lines"]) == (6, 1)
    assert summary["period"] == {"start": "2026-11-01", "end": "2026-11-03", "inferred": False}

    run_id = summary["run_id"]
    resp = await client.get(
        f"/api/v1/reconciliation/runs/{run_id}",
        params={"category": "amount_mismatch"},
        headers=AUTH,
    )
    body = await resp.json()
    assert resp.status == 200
    [item] = body["items"]
    assert (item["reference_number"], item["difference"]) == ("P-AMOUNT", "5.00")
    assert [e["line"] for e in body["run"]["errors"]] == [7]
    missing = await client.get(
        f"/api/v1/reconciliation/runs/{run_id}",
        params={"category": "missing_in_statement"},
        headers=AUTH,
    )
    assert [i["reference_number"] for i in (await missing.json())["items"]] == ["P-MISSING"]

    resp = await client.get(
        f"/api/v1/reconciliation/runs/{run_id}", params={"format": "csv"}, headers=AUTH
    )
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
    exported = list(csv.DictReader(io.StringIO(await resp.text())))
    assert len(exported) == 6
    assert {r["category"] for r in exported} >= {"matched", "missing_internal"}

    [event] = await queued_events(db, "event_type = 'reconciliation.completed'")
    assert event is not None and event["key"] == run_id
    assert orjson.loads(event["payload"])["exceptions"] == 4
    audited = await db.fetchval(
        "SELECT count(*) FROM payment_service.audit_log WHERE action = 'reconciliation_exception'"
    )
    assert audited == 4
    run_audit = await db.fetchrow(
        "SELECT actor, details FROM payment_service.audit_log WHERE action = 'reconciliation_run'"
    )
    assert run_audit["details"]["run_id"] == run_id
    assert run_audit["actor"] == "ops-test"  # the token's subject


async def test_unreadable_statement_is_422_and_the_run_is_marked_failed(
    make_client: ClientFactory, db: asyncpg.Pool
) -> None:
    client = await make_client()
    resp = await client.post(
        "/api/v1/reconciliation/statements", data=b"ref,amt\nA,1.00\n", headers=AUTH
    )
    body = await resp.json()
    assert resp.status == 422 and body["field"] == "statement"
    assert await db.fetchval("SELECT status FROM payment_service.reconciliation_runs") == "failed"
    resp = await client.get("/api/v1/reconciliation/runs/not-a-uuid", headers=AUTH)
    assert resp.status == 404


async def test_dlq_list_and_replay(make_client: ClientFactory, db: asyncpg.Pool) -> None:
    await db.execute(
        "INSERT INTO payment_service.outbox (event_id, event_type, topic, key, payload, attempts, "
        "dead_lettered_at, last_error) VALUES (gen_random_uuid(), 'payment.recorded', 't', 'R-1', "
        "'\\x7b7d', 10, now(), 'broker down')"
    )
    client = await make_client()
    resp = await client.get("/api/v1/dlq", headers=AUTH)
    [item] = (await resp.json())["items"]
    assert (item["key"], item["last_error"]) == ("R-1", "broker down")
    resp = await client.post("/api/v1/dlq/replay", json={"ids": [item["id"]]}, headers=AUTH)
    assert (await resp.json())["replayed"] == [item["id"]]
    row = await db.fetchrow("SELECT attempts, dead_lettered_at FROM payment_service.outbox")
    assert row is not None and (row["attempts"], row["dead_lettered_at"]) == (0, None)
    assert (
        await db.fetchval("SELECT actor FROM payment_service.audit_log WHERE action = 'dlq_replay'")
        == "ops-test"
    )
    resp = await client.post("/api/v1/dlq/replay", json={}, headers=AUTH)
    assert resp.status == 422
    for bad in ([2**63], [-1], [0]):  # outside an outbox id's bigint range: 422, never 500
        resp = await client.post("/api/v1/dlq/replay", json={"ids": bad}, headers=AUTH)
        assert (resp.status, (await resp.json())["error"]) == (422, "validation_error"), bad


async def test_cli_reconciles_a_file_and_prints_the_summary(
    stack: Any, db: asyncpg.Pool, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import make_settings
    from workers.cli import main as cli
    from workers.cli.reconcile import run as cmd_reconcile

    await _seed(
        db,
        [("C-1", "10.00", "2026-11-01", "succeeded"), ("C-2", "20.00", "2026-11-01", "succeeded")],
    )
    path = tmp_path / "statement.csv"
    path.write_text("ref\tamt\tdate\nC-1\t10.00\t01/11/2026\nC-2\t19.50\t01/11/2026\n")
    argv = ["reconcile", str(path), "--delimiter", "tab", "--date-format", "%d/%m/%Y"]
    argv += ["--map", "reference_number=ref,amount=amt,payment_date=date"]
    argv += ["--tolerance", "0.50", "--fail-on-exceptions"]
    args = cli.build_parser().parse_args(argv)
    assert await cmd_reconcile(args, make_settings(stack)) == 0
    out = capsys.readouterr().out
    assert "matched_with_fee" in out and "2026-11-01 .. 2026-11-01" in out
    counts = dict(
        await db.fetch(
            "SELECT category, count(*) FROM payment_service.reconciliation_items GROUP BY 1"
        )
    )
    assert counts == {"matched": 1, "matched_with_fee": 1}
