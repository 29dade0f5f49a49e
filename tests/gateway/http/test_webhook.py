"""The webhook request path against real Postgres and Redis: what a provider sees, and what
ends up in the database."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import orjson

from tests.conftest import wait_for
from tests.events import queued_count, queued_events
from tests.webhooks import dedup_hits, payment_doc, post_webhook, signed_headers


async def _count(db: Any, table: str, ref: str | None = None) -> int:
    if ref is None:
        return await db.fetchval(f"SELECT count(*) FROM payment_service.{table}")
    return await db.fetchval(
        f"SELECT count(*) FROM payment_service.{table} WHERE reference_number = $1", ref
    )


async def test_new_payment_is_committed_before_201(client: Any, db: Any) -> None:
    doc = payment_doc(amount="1050.75", metadata={"k": "v"})
    status, body, headers = await post_webhook(client, doc)

    assert status == 201
    assert body["status"] == "created"
    assert headers["X-Request-ID"]
    row = await db.fetchrow(
        "SELECT * FROM payment_service.payments WHERE reference_number = $1",
        doc["reference_number"],
    )
    assert str(row["id"]) == body["payment_id"]
    assert row["amount"] == Decimal("1050.75")
    assert row["source"] == "webhook"
    assert row["status"] == "succeeded"
    assert row["metadata"] == {"k": "v"}
    ref = await db.fetchrow(
        "SELECT * FROM payment_service.payment_references WHERE reference_number = $1",
        doc["reference_number"],
    )
    assert str(ref["payment_id"]) == body["payment_id"]
    outbox = await queued_events(db)
    assert len(outbox) == 1
    event = orjson.loads(outbox[0]["payload"])
    assert event["event_type"] == "payment.recorded"
    assert event["payment"]["amount"] == "1050.75"
    assert event["payment"]["id"] == body["payment_id"]
    raw = await db.fetchrow("SELECT * FROM payment_service.webhook_events")
    assert raw["outcome"] == "created" and raw["body"] == orjson.dumps(doc)
    assert await _count(db, "audit_log", doc["reference_number"]) == 1


async def test_same_payment_again_is_a_duplicate_with_the_same_id(client: Any, db: Any) -> None:
    doc = payment_doc()
    _, first, _ = await post_webhook(client, doc)
    status, again, _ = await post_webhook(client, doc)

    assert status == 200
    assert again == {"status": "duplicate", "payment_id": first["payment_id"]}
    assert await _count(db, "payments", doc["reference_number"]) == 1
    assert await queued_count(db) == 1


async def test_duplicate_with_other_metadata_is_still_a_duplicate(client: Any, db: Any) -> None:
    doc = payment_doc()
    _, first, _ = await post_webhook(client, doc)
    status, again, _ = await post_webhook(client, dict(doc, metadata={"retry": 2}))
    assert (status, again["payment_id"]) == (200, first["payment_id"])


async def test_same_reference_different_amount_is_a_recorded_conflict(client: Any, db: Any) -> None:
    doc = payment_doc(amount="10.00")
    _, first, _ = await post_webhook(client, doc)
    status, body, _ = await post_webhook(client, dict(doc, amount="10.01"))

    assert status == 409
    assert body["error"] == "reference_conflict"
    assert body["payment_id"] == first["payment_id"]
    amounts = await db.fetch(
        "SELECT amount FROM payment_service.payments WHERE reference_number = $1",
        doc["reference_number"],
    )
    assert [r["amount"] for r in amounts] == [Decimal("10.00")]
    audit = await db.fetchrow(
        "SELECT * FROM payment_service.audit_log"
        " WHERE action = 'conflict' AND reference_number = $1",
        doc["reference_number"],
    )
    assert audit["details"]["received"]["amount"] == "10.01"


async def test_conflict_is_detected_even_when_memory_knows_the_reference(
    client: Any, db: Any
) -> None:
    doc = payment_doc(cif="CIF-A")
    await post_webhook(client, doc)
    status, _, _ = await post_webhook(client, dict(doc, cif="CIF-B"))
    assert status == 409


async def test_validation_errors_name_the_field(client: Any, db: Any) -> None:
    cases = {
        "amount": [payment_doc(amount="0"), payment_doc(amount="-5"), payment_doc(amount="1.001"),
                   payment_doc(amount="NaN"), payment_doc(amount="99999999999999.00"),
                   payment_doc(amount=True)],
        "cif": [payment_doc(cif="C" * 501), payment_doc(cif=123)],
        "loan_account_number": [payment_doc(loan_account_number=None)],
        "reference_number": [payment_doc(reference_number="R" * 256)],
        "payment_date": [payment_doc(payment_date="yesterday"),
                         payment_doc(payment_date="1999-01-01"),
                         payment_doc(payment_date="2999-01-01")],
    }  # fmt: skip
    for field, docs in cases.items():
        for doc in docs:
            status, body, _ = await post_webhook(client, doc)
            assert status == 422, (field, doc, body)
            assert body["error"] == "validation_error"
            assert body["field"] == field, (doc, body)
    assert await _count(db, "payments") == 0


async def test_float_amount_is_taken_from_its_shortest_decimal_form(client: Any, db: Any) -> None:
    doc = payment_doc(amount=0.1)
    body = orjson.dumps(doc)
    status, data, _ = await post_webhook(client, None, raw=body)
    assert status == 201
    amount = await db.fetchval(
        "SELECT amount FROM payment_service.payments WHERE id = $1::uuid", data["payment_id"]
    )
    assert amount == Decimal("0.10")


async def test_non_json_is_400_and_non_object_is_422(client: Any, db: Any) -> None:
    status, body, _ = await post_webhook(client, None, raw=b"{not json")
    assert (status, body["error"]) == (400, "invalid_json")
    status, body, _ = await post_webhook(client, [1, 2])
    assert status == 422


async def test_oversized_body_is_413(make_client: Any) -> None:
    client = await make_client(max_body_bytes=2048)
    doc = payment_doc(metadata={"pad": "x" * 4096})
    status, body, _ = await post_webhook(client, doc)
    assert (status, body["error"]) == (413, "payload_too_large")


async def test_bad_signatures_are_401_with_a_reason(client: Any, db: Any) -> None:
    body = orjson.dumps(payment_doc())
    good = signed_headers(body)
    variants = {
        "missing_signature": {k: v for k, v in good.items() if k != "webhook-signature"},
        "signature_mismatch": dict(good, **{"webhook-signature": "v1," + "A" * 43 + "="}),
        "timestamp_out_of_tolerance": signed_headers(body, now=int(time.time()) - 3600),
    }
    for reason, headers in variants.items():
        status, data, _ = await post_webhook(client, None, raw=body, headers=headers)
        assert (status, data["error"], data["reason"]) == (401, "invalid_signature", reason)
    tampered = body.replace(b"125.50", b"925.50")
    status, _, _ = await post_webhook(client, None, raw=tampered, headers=good)
    assert status == 401
    status, _, _ = await post_webhook(client, None, raw=b"\xff\xfe\x00garbage", headers=good)
    assert status == 401
    assert await _count(db, "payments") == 0


async def test_unknown_channel_is_404(client: Any) -> None:
    status, body, _ = await post_webhook(client, payment_doc(), channel="nope")
    assert (status, body["error"]) == (404, "unknown_channel")


async def test_concurrent_copies_of_one_reference_create_one_payment(client: Any, db: Any) -> None:
    doc = payment_doc()
    results = await asyncio.gather(*(post_webhook(client, doc) for _ in range(40)))
    statuses = sorted(r[0] for r in results)
    assert statuses.count(201) == 1
    assert statuses.count(200) == 39
    assert len({r[1]["payment_id"] for r in results}) == 1
    assert await _count(db, "payments", doc["reference_number"]) == 1
    assert await queued_count(db) == 1


async def test_two_instances_record_each_reference_once_under_a_storm(
    make_client: Any, db: Any
) -> None:
    # Several writers per instance as well as two instances: batches race within and across.
    a = await make_client(cache_warm_count=0, write_concurrency=3)
    b = await make_client(cache_warm_count=0, write_concurrency=3)
    docs = [payment_doc() for _ in range(60)]
    sends = [post_webhook(c, d) for d in docs for c in (a, b, a, b, a)]
    results = await asyncio.gather(*sends)
    by_ref: dict[str, list[tuple[int, str]]] = {}
    for (status, body, _), (doc, _c) in zip(
        results, [(d, c) for d in docs for c in range(5)], strict=True
    ):
        by_ref.setdefault(doc["reference_number"], []).append((status, body["payment_id"]))
    for ref, answers in by_ref.items():
        assert sorted(s for s, _ in answers) == [200, 200, 200, 200, 201], ref
        assert len({pid for _, pid in answers}) == 1
    assert await _count(db, "payments") == 60
    assert await _count(db, "payment_references") == 60


async def test_memory_cache_is_warmed_from_recent_references(make_client: Any, db: Any) -> None:
    from gateway import appkeys

    first = await make_client()
    doc = payment_doc()
    _, created, _ = await post_webhook(first, doc)
    second = await make_client(cache_warm_count=100)
    known = second.server.app[appkeys.DEDUP].lookup_local(doc["reference_number"])
    assert known is not None and known.payment_id == created["payment_id"]


async def test_redis_answers_duplicates_another_instance_recorded(
    make_client: Any, db: Any
) -> None:
    a = await make_client(cache_warm_count=0)
    b = await make_client(cache_warm_count=0)
    doc = payment_doc()
    _, created, _ = await post_webhook(a, doc)
    before = dedup_hits("redis")

    async def redis_has_it() -> bool:
        from gateway import appkeys

        cache = a.server.app[appkeys.REDIS]
        return (await cache.exchange([doc["reference_number"]], {}))[0] is not None

    await wait_for(redis_has_it, timeout=5)
    status, body, _ = await post_webhook(b, doc)
    assert (status, body["payment_id"]) == (200, created["payment_id"])
    assert dedup_hits("redis") == before + 1


async def test_redis_down_costs_nothing_but_speed(make_client: Any, db: Any, stack: Any) -> None:
    client = await make_client(cache_warm_count=0, enable_memory_cache=False)
    doc = payment_doc()
    await stack.redis.stop()
    try:
        results = [await post_webhook(client, doc) for _ in range(5)]
        other = await post_webhook(client, payment_doc())
    finally:
        await stack.redis.start()
    assert [r[0] for r in results] == [201, 200, 200, 200, 200]
    assert other[0] == 201
    assert await _count(db, "payments") == 2


async def test_postgres_down_is_a_fast_503_and_service_returns(
    make_client: Any, stack: Any, db: Any
) -> None:
    client = await make_client()
    await stack.postgres.stop()
    try:
        started = time.monotonic()
        status, body, headers = await post_webhook(client, payment_doc())
        elapsed = time.monotonic() - started
        assert status == 503
        assert body["error"] in ("database_unavailable", "write_timeout")
        assert int(headers["Retry-After"]) >= 1
        assert elapsed < 6  # bounded by the write timeout, never a hang
    finally:
        await stack.postgres.start()

    async def accepted() -> bool:
        status, _, _ = await post_webhook(client, payment_doc())
        return status == 201

    await wait_for(accepted, timeout=15, interval=0.3)


async def test_full_queue_answers_503_not_a_hang(make_client: Any, db: Any) -> None:
    client = await make_client(write_queue_max=1, write_batch_max_wait_ms=50.0, write_concurrency=1)
    results = await asyncio.gather(*(post_webhook(client, payment_doc()) for _ in range(20)))
    statuses = [r[0] for r in results]
    assert 503 in statuses
    assert set(statuses) <= {201, 503}
    overloaded = [r for r in results if r[0] == 503]
    assert all(r[1]["error"] == "overloaded" and r[2]["Retry-After"] for r in overloaded)
    assert await _count(db, "payments") == statuses.count(201)


async def test_a_commit_slower_than_the_timeout_is_a_503_and_the_retry_finds_it(
    make_client: Any, db: Any
) -> None:
    client = await make_client(webhook_timeout_ms=300, enable_memory_cache=False)
    doc = payment_doc()
    async with db.acquire() as blocker, blocker.transaction():
        await blocker.execute("LOCK TABLE payment_service.payment_references IN EXCLUSIVE MODE")
        started = time.monotonic()
        status, body, headers = await post_webhook(client, doc)
        elapsed = time.monotonic() - started
        assert (status, body["error"]) == (503, "write_timeout")
        assert int(headers["Retry-After"]) >= 1
        assert elapsed < 2  # 300 ms plus the sweep period, not the lock's duration
    # The batch was not cancelled: it commits once the lock is gone, and the retry is told so.
    await wait_for(lambda: _has_payment(db, doc["reference_number"]), timeout=10)
    status, body, _ = await post_webhook(client, doc)
    assert (status, body["status"]) == (200, "duplicate")
    assert await _count(db, "payments", doc["reference_number"]) == 1


async def _has_payment(db: Any, ref: str) -> bool:
    return await _count(db, "payments", ref) == 1


async def test_request_ids_are_unique_and_echoed(client: Any) -> None:
    ids = set()
    for _ in range(50):
        resp = await client.get("/health/live")
        ids.add(resp.headers["X-Request-ID"])
    assert len(ids) == 50


async def test_request_id_is_echoed(client: Any) -> None:
    resp = await client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["X-Request-ID"] == "abc-123"
    resp = await client.get("/health/live", headers={"X-Request-ID": "bad id with spaces"})
    assert resp.headers["X-Request-ID"] != "bad id with spaces"
