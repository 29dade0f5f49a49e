"""Formula injection through the run export (issue 28, item 2), through the real app:
references from a statement come out of every CSV as text, never as live formulas."""

from __future__ import annotations

import csv
import io
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from tests.gateway.http.ops_helpers import auth

HOSTILE = ['=HYPERLINK("http://evil.example","click")', "+SUM(1,2)",
           "-2+3+cmd|' /C calc'!A0", "@SUM(1)"]  # fmt: skip


async def exported(client: TestClient[Any, Any], path: str, **params: str) -> list[dict[str, str]]:
    resp = await client.get(path, params=params, headers=auth(client))
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(await resp.text())))


async def test_hostile_references_come_out_of_every_export_as_text(
    client: TestClient[Any, Any], db: asyncpg.Pool
) -> None:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["reference_number", "amount", "payment_date"])
    for ref in HOSTILE:
        w.writerow([ref, "1.00", "2026-10-05"])
    resp = await client.post("/api/v1/reconciliation/statements", data=out.getvalue().encode(),
                             headers=auth(client))  # fmt: skip
    run = await resp.json()
    assert resp.status == 201 and run["counts"]["missing_internal"] == 4, run

    rows = await exported(client, f"/api/v1/reconciliation/runs/{run['run_id']}", format="csv")
    assert sorted(r["reference_number"] for r in rows) == sorted("'" + h for h in HOSTILE)
    queue = await exported(client, "/api/v1/reconciliation/exceptions", format="csv")
    assert sorted(r["reference_number"] for r in queue) == sorted("'" + h for h in HOSTILE)
