"""Stored deliveries through the real app and Postgres: refused deliveries are kept,
listed, shown as sent, and replayed through today's mapping, never recording twice."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiohttp.test_utils import TestClient

from gateway import appkeys
from gateway.db.deliveries import Refused
from gateway.errors import ServiceUnavailable
from gateway.ingest.refusals import RefusalRecorder
from gateway.security.auth import READ
from tests.conftest import make_settings
from tests.events import queued_count
from tests.gateway.http.ops_helpers import (
    BROKEN_MAPPING,
    fix_partner_mapping,
    get,
    partner_channels,
    partner_doc,
    post,
)
from tests.stack import TestStack as Stack
from tests.webhooks import payment_doc, post_webhook, signed_headers

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


async def count(db: asyncpg.Pool, table: str, where: str = "TRUE", *args: Any) -> int:
    return int(
        await db.fetchval(f"SELECT count(*) FROM payment_service.{table} WHERE {where}", *args)
    )


async def send_partner(client: TestClient[Any, Any], doc: Any) -> tuple[int, dict[str, Any]]:
    status, data, _ = await post_webhook(client, doc, channel="partner")
    return status, data


async def broken_partner(
    make_client: MakeClient, tmp_path: Path
) -> tuple[TestClient[Any, Any], str]:
    path = partner_channels(tmp_path, BROKEN_MAPPING)
    return await make_client(channels_file=path), path


async def test_a_refused_delivery_is_stored_before_its_422(
    make_client: MakeClient, db: asyncpg.Pool, tmp_path: Path
) -> None:
    client, _ = await broken_partner(make_client, tmp_path)
    ref = f"P-{uuid.uuid4().hex[:10]}"
    status, data = await send_partner(client, partner_doc(ref))
    assert (status, data["error"], data["field"]) == (422, "validation_error", "amount")
    row = await db.fetchrow(
        "SELECT channel, outcome, reference_number, body, error FROM payment_service.webhook_events"
    )
    assert row is not None
    assert (row["channel"], row["outcome"], row["reference_number"]) == ("partner", "invalid", ref)
    assert orjson.loads(row["body"]) == partner_doc(ref) | {"paid_on": partner_doc(ref)["paid_on"]}
    assert row["error"]["field"] == "amount"
    assert await count(db, "payments") == 0


async def test_a_refusal_naming_a_nul_character_is_stored_and_still_a_422(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    # Postgres text and jsonb cannot hold NUL: the reference and the error's detail would
    # fail the INSERT, and the refusal would become a 503 the provider retries forever.
    client = await make_client()
    doc = payment_doc("NUL\u0000REF", amount="not money \u0000")
    status, data, _ = await post_webhook(client, doc)
    assert status == 422, data
    row = await db.fetchrow(
        "SELECT outcome, reference_number, body FROM payment_service.webhook_events"
    )
    assert row is not None
    assert row["outcome"] == "invalid"
    assert row["reference_number"] == "NUL\ufffdREF"
    assert orjson.loads(row["body"]) == doc  # the bytes are kept exactly


async def test_invalid_json_and_ignored_event_types_are_stored_too(
    make_client: MakeClient, db: asyncpg.Pool, tmp_path: Path
) -> None:
    client, _ = await broken_partner(make_client, tmp_path)
    raw = b'{"ref": "P-1", \xff broken'
    status, data, _ = await post_webhook(client, None, raw=raw, channel="partner",
                                         headers=signed_headers(raw))  # fmt: skip
    assert (status, data["error"]) == (400, "invalid_json")
    status, data = await send_partner(
        client, partner_doc("P-2", event_type="payment.pending_review")
    )
    assert (status, data["status"]) == (200, "ignored")
    rows = await db.fetch("SELECT outcome, body FROM payment_service.webhook_events ORDER BY id")
    assert [r["outcome"] for r in rows] == ["invalid_json", "ignored"]
    assert bytes(rows[0]["body"]) == raw

    status, page = await get(client, "/api/v1/deliveries", outcome="invalid_json")
    assert status == 200 and len(page["items"]) == 1
    status, detail = await get(client, f"/api/v1/deliveries/{page['items'][0]['id']}")
    assert status == 200
    body = detail["delivery"]["body"]
    assert body["encoding"] == "base64" and body["pretty"] is None


async def test_accepted_deliveries_are_listed_newest_first_with_filters(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    client = await make_client()
    refs = [f"D-{i}-{uuid.uuid4().hex[:6]}" for i in range(5)]
    for ref in refs:
        status, _, _ = await post_webhook(client, payment_doc(ref))
        assert status == 201
    # A conflict is stored (a duplicate answered from memory never reaches the database).
    assert (await post_webhook(client, payment_doc(refs[0], amount="1.00")))[0] == 409
    status, page = await get(client, "/api/v1/deliveries", limit=2)
    assert status == 200
    seen = [i["reference_number"] for i in page["items"]]
    while page["next_cursor"]:
        status, page = await get(client, "/api/v1/deliveries", limit=2, cursor=page["next_cursor"])
        seen += [i["reference_number"] for i in page["items"]]
    assert seen == [refs[0], *reversed(refs)]
    status, page = await get(client, "/api/v1/deliveries", outcome="conflict")
    assert [i["reference_number"] for i in page["items"]] == [refs[0]]
    status, page = await get(client, "/api/v1/deliveries", reference_number=refs[2])
    assert [i["outcome"] for i in page["items"]] == ["created"]
    status, page = await get(client, "/api/v1/deliveries", channel="elsewhere")
    assert page["items"] == []
    status, err = await get(client, "/api/v1/deliveries", outcome="nonsense")
    assert (status, err["error"], err["field"]) == (422, "validation_error", "outcome")
    status, err = await get(client, "/api/v1/deliveries", cursor="not-a-cursor")
    assert (status, err["field"]) == (422, "cursor")


async def test_a_delivery_shows_its_body_pretty_with_numbers_as_sent(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    client = await make_client()
    raw = orjson.dumps(payment_doc("PRETTY-1")).replace(b'"125.50"', b"125.50")
    status, _, _ = await post_webhook(client, None, raw=raw, headers=signed_headers(raw))
    assert status == 201
    ident = await db.fetchval("SELECT id FROM payment_service.webhook_events")
    status, detail = await get(client, f"/api/v1/deliveries/{ident}")
    assert status == 200
    body = detail["delivery"]["body"]
    assert body["encoding"] == "json" and body["raw"] == raw.decode()
    assert '"amount": 125.50' in body["pretty"]  # not 125.5: the digits the provider sent
    assert detail["delivery"]["outcome"] == "created" and detail["replays"] == []
    status, err = await get(client, "/api/v1/deliveries/999999")
    assert (status, err["error"]) == (404, "delivery_not_found")
    status, err = await get(client, "/api/v1/deliveries/abc")
    assert (status, err["error"]) == (404, "delivery_not_found")


async def test_replay_after_the_mapping_is_fixed_records_the_payment_once(
    make_client: MakeClient, db: asyncpg.Pool, tmp_path: Path
) -> None:
    client, path = await broken_partner(make_client, tmp_path)
    ref = f"P-{uuid.uuid4().hex[:10]}"
    assert (await send_partner(client, partner_doc(ref)))[0] == 422
    ident = await db.fetchval("SELECT id FROM payment_service.webhook_events")

    status, again = await post(client, f"/api/v1/deliveries/{ident}/replay")
    assert (status, again["status"], again["outcome"]) == (200, 422, "invalid")  # still broken

    fix_partner_mapping(client, path)
    status, first = await post(client, f"/api/v1/deliveries/{ident}/replay", subject="bob")
    assert status == 200, first
    assert (first["status"], first["outcome"]) == (201, "created")
    payment_id = first["answer"]["payment_id"]
    status, second = await post(client, f"/api/v1/deliveries/{ident}/replay")
    assert (second["status"], second["outcome"]) == (200, "duplicate")
    assert second["answer"]["payment_id"] == payment_id

    assert await count(db, "payments", "reference_number = $1", ref) == 1
    assert await queued_count(db) == 1
    assert await db.fetchval("SELECT amount::text FROM payment_service.payments") == "42.10"
    status, detail = await get(client, f"/api/v1/deliveries/{ident}")
    assert [r["outcome"] for r in detail["replays"]] == ["invalid", "created", "duplicate"]
    audit = await db.fetch(
        "SELECT actor, details FROM payment_service.audit_log WHERE action = 'delivery_replay'"
        " ORDER BY id"
    )
    assert [a["actor"] for a in audit] == ["alice", "bob", "alice"]
    assert audit[1]["details"]["delivery_id"] == ident
    # The payment's page names the refused delivery and the replay that recorded it.
    status, page = await get(client, f"/api/v1/payments/{payment_id}")
    assert [d["outcome"] for d in page["deliveries"]] == ["invalid", "created"]


async def test_two_replays_of_one_delivery_at_once_record_one_payment(
    make_client: MakeClient, db: asyncpg.Pool, tmp_path: Path
) -> None:
    client, path = await broken_partner(make_client, tmp_path)
    refs = [f"C-{i}-{uuid.uuid4().hex[:8]}" for i in range(5)]
    for ref in refs:
        assert (await send_partner(client, partner_doc(ref)))[0] == 422
    fix_partner_mapping(client, path)
    ids = [r["id"] for r in await db.fetch("SELECT id FROM payment_service.webhook_events")]
    # Both replays of each delivery in flight together: the same batch or racing batches.
    results = await asyncio.gather(
        *(post(client, f"/api/v1/deliveries/{i}/replay") for i in ids for _ in range(2))
    )
    outcomes = sorted(r[1]["outcome"] for r in results)
    assert outcomes == ["created"] * 5 + ["duplicate"] * 5
    for ref in refs:
        assert await count(db, "payments", "reference_number = $1", ref) == 1
    assert await queued_count(db) == 5


async def test_replays_on_two_app_instances_record_one_payment(
    make_client: MakeClient, db: asyncpg.Pool, stack: Stack, tmp_path: Path
) -> None:
    """Separate caches and writers: only payment_references can decide."""
    path = partner_channels(tmp_path, BROKEN_MAPPING)
    one = await make_client(channels_file=path)
    assert (await send_partner(one, partner_doc("TWO-INSTANCES")))[0] == 422
    fix_partner_mapping(one, path)
    two = await make_client(channels_file=path)
    ident = await db.fetchval("SELECT id FROM payment_service.webhook_events")
    a, b = await asyncio.gather(
        post(one, f"/api/v1/deliveries/{ident}/replay"),
        post(two, f"/api/v1/deliveries/{ident}/replay"),
    )
    assert sorted([a[1]["outcome"], b[1]["outcome"]]) == ["created", "duplicate"]
    assert await count(db, "payments") == 1


async def test_bulk_replay_dry_run_writes_nothing_then_replays(
    make_client: MakeClient, db: asyncpg.Pool, tmp_path: Path
) -> None:
    client, path = await broken_partner(make_client, tmp_path)
    for i in range(3):
        assert (await send_partner(client, partner_doc(f"B-{i}")))[0] == 422
    assert (await send_partner(client, partner_doc("B-X", amount="-1")))[0] == 422
    fix_partner_mapping(client, path)

    filt = {"channel": "partner", "outcome": "invalid"}
    status, dry = await post(client, "/api/v1/deliveries/replay", {**filt, "dry_run": True})
    assert status == 200, dry
    assert dry["dry_run"] is True
    assert [r["would"] for r in dry["results"]] == ["create", "create", "create", "refuse"]
    assert dry["results"][3]["field"] == "amount"
    assert await count(db, "payments") == 0 and await count(db, "delivery_replays") == 0

    status, page = await post(client, "/api/v1/deliveries/replay", {**filt, "limit": 2})
    assert [r["outcome"] for r in page["results"]] == ["created", "created"]
    assert page["next_cursor"]
    status, rest = await post(
        client, "/api/v1/deliveries/replay", {**filt, "limit": 2, "cursor": page["next_cursor"]}
    )
    assert [r["outcome"] for r in rest["results"]] == ["created", "invalid"]
    assert rest["next_cursor"] is not None  # a full page: the next one is empty
    status, done = await post(
        client, "/api/v1/deliveries/replay", {**filt, "limit": 2, "cursor": rest["next_cursor"]}
    )
    assert done["results"] == [] and done["next_cursor"] is None
    assert await count(db, "payments") == 3

    status, dry = await post(client, "/api/v1/deliveries/replay", {**filt, "dry_run": True})
    assert [r["would"] for r in dry["results"]][:3] == ["duplicate"] * 3


async def test_bulk_replay_refuses_an_unbounded_or_malformed_request(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    client = await make_client()
    for doc, field in (
        ({}, "outcome"),
        ({"outcome": "invalid", "limit": 5000}, "limit"),
        ({"outcome": "invalid", "dry_run": "yes"}, "dry_run"),
        ({"outcome": "invalid", "surprise": 1}, "surprise"),
        ({"outcome": "invalid", "from": "yesterday"}, "from"),
        ({"outcome": "invalid", "cursor": "zzz"}, "cursor"),
    ):
        status, err = await post(client, "/api/v1/deliveries/replay", doc)
        assert (status, err["field"]) == (422, field), doc


async def test_replay_needs_the_write_role(make_client: MakeClient, db: asyncpg.Pool) -> None:
    client = await make_client()
    status, err = await post(client, "/api/v1/deliveries/1/replay", role=READ)
    assert (status, err["error"]) == (403, "forbidden")
    resp = await client.get("/api/v1/deliveries")
    assert resp.status == 401


async def test_a_refusal_that_cannot_be_stored_is_a_503(stack: Stack, db: asyncpg.Pool) -> None:
    """Postgres unreachable: the provider must retry, so the 4xx becomes a 503."""
    from gateway.db.pool import create_pool

    pool = await create_pool(make_settings(stack), min_size=0, max_size=1)
    await pool.close()
    recorder = RefusalRecorder(lambda: pool)
    recorder.start()
    try:
        refused = Refused("generic", None, None, "invalid", b"{}", {"error": "validation_error"})
        try:
            await recorder.record(refused)
        except ServiceUnavailable as exc:
            assert exc.code == "database_unavailable"
        else:
            raise AssertionError("a refusal on a closed pool was acknowledged")
    finally:
        await recorder.stop()


async def test_the_refusal_recorder_batches_and_commits_before_answering(
    make_client: MakeClient, db: asyncpg.Pool, tmp_path: Path
) -> None:
    client, _ = await broken_partner(make_client, tmp_path)
    answers = await asyncio.gather(
        *(send_partner(client, partner_doc(f"M-{i}")) for i in range(40))
    )
    assert {a[0] for a in answers} == {422}
    # Every 422 was answered after its row was committed: all are there at once.
    assert await count(db, "webhook_events", "outcome = 'invalid'") == 40
    assert client.server.app[appkeys.REFUSALS] is not None
