"""A statement imported twice must not double the work (issue 27, section 3), through the
real app: the same statement returns its run (200, saying so), and a difference
(reference + category) is one open item across runs until it is resolved."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from tests.gateway.http.ops_helpers import auth, get, post
from tests.gateway.http.test_statement_matching import HEAD, STATEMENTS, seed

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]
EXCEPTIONS = "/api/v1/reconciliation/exceptions"
FIRST = "ID-A,100.00,2026-10-05,,\nID-B,55.00,2026-10-05,,\nID-X,9.99,2026-10-05,,\n"


async def send(client: TestClient[Any, Any], lines: str, **params: str) -> tuple[int, Any]:
    resp = await client.post(STATEMENTS, params=params, data=(HEAD + lines).encode(),
                             headers=auth(client))  # fmt: skip
    return resp.status, await resp.json()


async def queue(client: TestClient[Any, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    status, page = await get(client, EXCEPTIONS, limit=100)
    assert status == 200
    return {(i["reference_number"], i["category"]): i for i in page["items"]}


async def test_the_same_statement_imported_again_returns_its_run(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    await seed(db, ("ID-A", "100.00", "2026-10-05", "succeeded"),
               ("ID-B", "50.00", "2026-10-05", "succeeded"),
               ("ID-C", "20.00", "2026-10-05", "succeeded"))  # fmt: skip
    client = await make_client()
    status, first = await send(client, FIRST)
    assert status == 201 and first["exceptions"] == 3, first
    before = await queue(client)
    assert set(before) == {("ID-B", "amount_mismatch"), ("ID-X", "missing_internal"),
                           ("ID-C", "missing_in_statement")}  # fmt: skip
    for _ in range(3):
        status, again = await send(client, FIRST)
        assert status == 200, again
        assert again["already_imported"] is True and again["run_id"] == first["run_id"]
        assert "imported already" in again["detail"]
    assert await queue(client) == before
    assert await db.fetchval("SELECT count(*) FROM payment_service.reconciliation_runs") == 1
    # Read with other options (a tolerance), it is another reading of the file: a new run,
    # whose differences are the open ones seen again.
    status, other = await send(client, FIRST, tolerance="0.01")
    assert status == 201 and other["already_open"] == 3 and other["new_exceptions"] == 0
    assert set(await queue(client)) == set(before)


async def test_concurrent_imports_of_one_statement_make_one_run(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    await seed(db, ("ID-A", "100.00", "2026-10-05", "succeeded"))
    client = await make_client()
    answers = await asyncio.gather(*(send(client, FIRST) for _ in range(4)))
    assert sorted(s for s, _ in answers) == [200, 200, 200, 201]
    assert len({a["run_id"] for _, a in answers}) == 1
    assert await db.fetchval("SELECT count(*) FROM payment_service.reconciliation_runs") == 1


async def test_a_difference_is_one_open_item_across_runs_until_resolved(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    await seed(db, ("ID-A", "100.00", "2026-10-05", "succeeded"),
               ("ID-B", "50.00", "2026-10-05", "succeeded"),
               ("ID-C", "20.00", "2026-10-05", "succeeded"))  # fmt: skip
    client = await make_client()
    await send(client, FIRST)
    opened = await queue(client)
    # The next statement still has B's and X's differences, and now shows C.
    status, second = await send(client, FIRST + "ID-C,20.00,2026-10-05,,\n")
    assert status == 201
    assert (second["exceptions"], second["already_open"], second["new_exceptions"]) == (2, 2, 0)
    assert second["no_longer_found"] == 1
    now = await queue(client)
    assert set(now) == set(opened)  # one open item per difference, none doubled
    for key in (("ID-B", "amount_mismatch"), ("ID-X", "missing_internal")):
        assert now[key]["id"] == opened[key]["id"]
        assert now[key]["seen_count"] == 2 and now[key]["last_seen_run_id"] == second["run_id"]
    c = now[("ID-C", "missing_in_statement")]
    assert c["cleared_run_id"] == second["run_id"] and c["cleared_at"] is not None
    # The second run's own items point at the open ones.
    status, run = await get(client, f"/api/v1/reconciliation/runs/{second['run_id']}")
    linked = {i["reference_number"]: i["open_item_id"] for i in run["items"]
              if i["category"] != "matched"}  # fmt: skip
    assert linked == {"ID-B": opened[("ID-B", "amount_mismatch")]["id"],
                      "ID-X": opened[("ID-X", "missing_internal")]["id"]}  # fmt: skip
    # A sighting is not acted on by itself: the open item is.
    sighting = next(i for i in run["items"] if i["reference_number"] == "ID-B")
    status, body = await post(client, f"{EXCEPTIONS}/item/{sighting['id']}/resolve",
                              {"resolution": "written_off"})  # fmt: skip
    assert (status, body["error"]) == (409, "sighting_of_open_item")

    # Resolved, the difference found again is a new open item.
    b = opened[("ID-B", "amount_mismatch")]["id"]
    status, body = await post(client, f"{EXCEPTIONS}/item/{b}/resolve",
                              {"resolution": "written_off", "note": "bank fee"})  # fmt: skip
    assert status == 200, body
    status, third = await send(client, "ID-B,55.00,2026-10-05,,\n")
    # New: B (its item was resolved) and A (missing now); C's open item is seen again.
    assert status == 201 and (third["new_exceptions"], third["already_open"]) == (2, 1)
    assert (
        now[("ID-B", "amount_mismatch")]["id"]
        != (await queue(client))[("ID-B", "amount_mismatch")]["id"]
    )


async def test_a_failed_import_does_not_hold_the_statements_identity(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    client = await make_client()
    bad = b"ref,amt\nA,1.00\n"
    for _ in range(2):
        resp = await client.post(STATEMENTS, data=bad, headers=auth(client))
        assert resp.status == 422
    statuses = await db.fetch("SELECT status, summary FROM payment_service.reconciliation_runs")
    assert [r["status"] for r in statuses] == ["failed", "failed"]
    assert "reference_number" in statuses[0]["summary"]["error"]
