"""Finding payments through the real app and Postgres: the search's filters and keyset
pages, and a payment's page with everything that touched it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from gateway import appkeys
from gateway.security.auth import READ
from tests.conftest import RESET_CURSORS
from tests.events import queued_events
from tests.gateway.http.ops_helpers import auth, get
from tests.webhooks import payment_doc, post_webhook

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


async def record(client: TestClient[Any, Any], ref: str, **fields: Any) -> str:
    status, data, _ = await post_webhook(client, payment_doc(ref, **fields))
    assert status == 201, data
    return str(data["payment_id"])


async def walk(client: TestClient[Any, Any], limit: int, **filters: Any) -> list[str]:
    """Every page of a search, by reference, following next_cursor."""
    refs: list[str] = []
    cursor = None
    while True:
        params = {**filters, "limit": limit, **({"cursor": cursor} if cursor else {})}
        status, page = await get(client, "/api/v1/payments", **params)
        assert status == 200, page
        refs += [p["reference_number"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return refs


async def test_search_filters_combine_and_pages_cover_every_payment_once(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    client = await make_client()
    refs = [f"S-{i:02d}-{uuid.uuid4().hex[:6]}" for i in range(7)]
    for i, ref in enumerate(refs):
        await record(client, ref, cif=f"CIF-{i % 2}", loan_account_number=f"LA-{i % 3}",
                     status="pending" if i in (1, 4) else "succeeded",
                     payment_channel="card" if i == 6 else "bank_transfer")  # fmt: skip
    newest_first = list(reversed(refs))
    assert await walk(client, 3) == newest_first
    assert await walk(client, 1) == newest_first
    assert await walk(client, 2, cif="CIF-0") == [r for r in newest_first if int(r[2:4]) % 2 == 0]
    assert await walk(client, 2, loan_account_number="LA-1") == [refs[4], refs[1]]
    assert await walk(client, 50, status="pending") == [refs[4], refs[1]]
    assert await walk(client, 50, status="pending", cif="CIF-1") == [refs[1]]
    assert await walk(client, 50, channel="card") == [refs[6]]
    assert await walk(client, 50, reference_number=refs[3]) == [refs[3]]
    assert await walk(client, 50, source="staging") == []
    assert await walk(client, 50, status="failed") == []

    status, page = await get(client, "/api/v1/payments", reference_number=refs[0])
    assert status == 200, page
    [item] = page["items"]
    assert item["amount"] == "125.50" and isinstance(item["id"], str)


async def test_search_by_recording_time(make_client: MakeClient, db: asyncpg.Pool) -> None:
    client = await make_client()
    old, new = f"T-OLD-{uuid.uuid4().hex[:6]}", f"T-NEW-{uuid.uuid4().hex[:6]}"
    await record(client, old)
    await record(client, new)
    await db.execute(
        "UPDATE payment_service.payments SET created_at = now() - interval '2 days'"
        " WHERE reference_number = $1",
        old,
    )
    yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert await walk(client, 10, **{"from": yesterday}) == [new]
    assert await walk(client, 10, to=yesterday) == [old]
    day = (datetime.now(UTC) - timedelta(days=2)).date().isoformat()
    assert await walk(client, 10, **{"from": day, "to": yesterday}) == [old]
    status, err = await get(client, "/api/v1/payments", **{"from": yesterday, "to": day})
    assert (status, err["field"]) == (422, "to")


async def test_pages_stay_stable_while_payments_are_recorded(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    """Payments recorded between two pages never push a row onto the next page twice or
    off it: a keyset page continues strictly after the last row it showed."""
    client = await make_client()
    first = [f"K-{i:02d}-{uuid.uuid4().hex[:6]}" for i in range(6)]
    for ref in first:
        await record(client, ref)
    status, page = await get(client, "/api/v1/payments", limit=2)
    seen = [p["reference_number"] for p in page["items"]]
    cursor = page["next_cursor"]
    while cursor:
        await asyncio.gather(*(record(client, f"LATE-{uuid.uuid4().hex[:8]}") for _ in range(3)))
        status, page = await get(client, "/api/v1/payments", limit=2, cursor=cursor)
        assert status == 200, page
        seen += [p["reference_number"] for p in page["items"]]
        cursor = page["next_cursor"]
    assert seen == list(reversed(first))


async def test_search_refuses_bad_parameters_with_the_field_named(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    client = await make_client()
    for params, field in (
        ({"status": "lost"}, "status"),
        ({"source": "fax"}, "source"),
        ({"limit": "0"}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"from": "last tuesday"}, "from"),
        ({"cursor": "eyJ4Ijox"}, "cursor"),
        ({"cif": "C" * 501}, "cif"),
    ):
        status, err = await get(client, "/api/v1/payments", **params)
        assert (status, err["error"], err["field"]) == (422, "validation_error", field), params
    resp = await client.get("/api/v1/payments")
    assert resp.status == 401


async def test_a_payment_by_id_or_reference_with_its_timeline(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    client = await make_client()
    ref = f"TL-{uuid.uuid4().hex[:8]}"
    payment_id = await record(client, ref, status="pending")
    status, data, _ = await post_webhook(client, payment_doc(ref, status="succeeded"))
    assert (status, data["status"]) == (200, "updated")
    status, data, _ = await post_webhook(client, payment_doc(ref, amount="9.99"))
    assert status == 409
    # The recorded event was published; the status change died (the relay moved it to the
    # outbox of retries, where it was dead-lettered).
    [change] = await queued_events(db, "event_type = 'payment.status_changed'")
    await db.execute(RESET_CURSORS)
    await db.execute(
        "INSERT INTO payment_service.outbox (event_id, event_type, topic, key, payload,"
        " attempts, dead_lettered_at, last_error)"
        " VALUES ($1, $2, $3, $4, $5, 10, now(), 'too large')",
        change["event_id"], change["event_type"], change["topic"], change["key"],
        change["payload"],
    )  # fmt: skip
    await db.execute(
        "INSERT INTO payment_service.payment_reviews (reference_number, payment_id, source, reason)"
        " VALUES ($1, $2, 'status_poller', 'unknown_status')",
        ref, uuid.UUID(payment_id),
    )  # fmt: skip

    for key in (payment_id, ref):
        status, page = await get(client, f"/api/v1/payments/{key}")
        assert status == 200, page
        assert page["payment"]["id"] == payment_id and page["payment"]["status"] == "succeeded"
    # A re-sent payment with a new status is kept by the writer as a duplicate delivery;
    # the change itself is the status_change audit row.
    assert [d["outcome"] for d in page["deliveries"]] == ["created", "duplicate", "conflict"]
    assert [a["action"] for a in page["audit"]] == ["created", "status_change", "conflict"]
    assert [(e["event_type"], e["state"]) for e in page["events"]] == [
        ("payment.recorded", "published"),
        ("payment.status_changed", "dead_lettered"),
    ]
    assert page["events"][1]["last_error"] == "too large"
    assert page["events"][1]["change"] == {"old": "pending", "new": "succeeded"}
    assert [r["reason"] for r in page["reviews"]] == ["unknown_status"]
    kinds = [t["kind"] for t in page["timeline"]]
    assert kinds[0] == "delivery" and set(kinds) == {"delivery", "audit", "event", "review"}
    times = [t["at"] for t in page["timeline"]]
    assert times == sorted(times)

    status, err = await get(client, f"/api/v1/payments/{uuid.uuid4()}")
    assert (status, err["error"]) == (404, "payment_not_found")
    status, err = await get(client, "/api/v1/payments/NO-SUCH-REFERENCE")
    assert (status, err["error"]) == (404, "payment_not_found")


async def test_a_pending_event_shows_as_pending(make_client: MakeClient, db: asyncpg.Pool) -> None:
    client = await make_client()
    payment_id = await record(client, f"PE-{uuid.uuid4().hex[:8]}")
    status, page = await get(client, f"/api/v1/payments/{payment_id}")
    assert status == 200, page
    assert [(e["event_type"], e["state"]) for e in page["events"]] == [
        ("payment.recorded", "pending")
    ]


async def test_reserved_words_keep_their_endpoints(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    client = await make_client()
    resp = await client.get("/api/v1/payments/webhook", headers=auth(client, role=READ))
    assert resp.status == 405  # the webhook path, not a payment lookup (and no token bypass)
    resp = await client.get("/api/v1/payments/stats", headers=auth(client, role=READ))
    assert resp.status == 200 and "webhooks" in await resp.json()
    assert client.server.app[appkeys.SETTINGS].admin_jwt_secret
