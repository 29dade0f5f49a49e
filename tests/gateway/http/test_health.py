"""Health as the load balancer and the operator see it: each dependency stopped for real,
and the endpoints recovering when it comes back."""

from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import wait_for
from tests.webhooks import payment_doc, post_webhook


async def get(client: Any, path: str) -> tuple[int, dict[str, Any]]:
    resp = await client.get(path)
    return resp.status, await resp.json()


async def _healthy(client: Any) -> dict[str, Any]:
    """The first healthy answer of /health (200), polled with a deadline: after start-up
    or a dependency's return, each probe has 1-2 s (a pool connection, a cold Kafka
    bootstrap), and on a slow machine the first answer can miss one (a fresh clone's
    PostgreSQL 15 pass got a 503)."""
    answers: list[tuple[int, dict[str, Any]]] = []

    async def healthy() -> bool:
        answers.append(await get(client, "/health"))
        status, body = answers[-1]
        return status == 200 and body["status"] == "healthy"

    try:
        await wait_for(healthy, timeout=30, interval=0.3)
    except AssertionError:
        raise AssertionError(f"/health never answered healthy; last: {answers[-1]}") from None
    return answers[-1][1]


async def test_health_has_seed_shape_when_all_is_up(client: Any, db: Any) -> None:
    body = await _healthy(client)
    assert body["status"] == "healthy"
    checks = body["checks"]
    assert {"database", "kafka", "redis", "staging_backlog", "last_staging_run"} <= set(checks)
    assert (checks["database"], checks["redis"], checks["kafka"]) == ("ok", "ok", "ok")
    assert checks["staging_backlog"] == 0
    assert checks["last_staging_run"] is None
    assert isinstance(checks["default_partition_rows"], int)
    assert isinstance(checks["warnings"], list)


async def test_live_and_ready_when_all_is_up(client: Any, db: Any) -> None:
    assert await get(client, "/health/live") == (200, {"status": "alive"})
    status, body = await get(client, "/health/ready")
    assert (status, body["status"], body["reasons"]) == (200, "ready", [])


async def test_staging_backlog_and_last_run_are_reported(client: Any, db: Any) -> None:
    await db.executemany(
        """INSERT INTO payment_service.payment_staging
           (reference_number, loan_account_number, cif, amount, payment_date)
           VALUES ($1, 'LA-1', 'CIF-1', 10.00, now())""",
        [(f"STG-{uuid.uuid4().hex[:12]}",) for _ in range(4)],
    )
    await db.execute(
        """INSERT INTO payment_service.staging_process_log
           (batch_start_id, batch_end_id, total_records, started_at)
           VALUES (1, 4, 4, '2026-01-02T03:04:05Z')"""
    )
    _, body = await get(client, "/health")
    assert body["checks"]["staging_backlog"] == 4
    assert body["checks"]["last_staging_run"].startswith("2026-01-02T03:04:05")


async def test_default_partition_rows_warn_without_turning_unhealthy(client: Any, db: Any) -> None:
    await db.execute(
        """INSERT INTO payment_service.payments
           (id, reference_number, loan_account_number, cif, amount, payment_date, source)
           VALUES ($1, $2, 'LA-1', 'CIF-1', 5.00, '1990-01-15', 'staging')""",
        uuid.uuid4(),
        f"OLD-{uuid.uuid4().hex[:12]}",
    )
    expected = sum(
        [
            await db.fetchval(f"SELECT count(*) FROM payment_service.{t}_default")
            for t in ("payments", "webhook_events", "audit_log")
        ]
    )
    body = await _healthy(client)
    assert body["status"] == "healthy"
    assert body["checks"]["default_partition_rows"] == expected >= 1
    assert any("DEFAULT" in w for w in body["checks"]["warnings"])


async def test_redis_down_is_unhealthy_but_ready(client: Any, db: Any, stack: Any) -> None:
    await stack.redis.stop()
    try:
        status, body = await get(client, "/health")
        assert status == 503
        assert body["status"] == "unhealthy"
        assert body["checks"]["redis"] == "error"
        assert body["checks"]["database"] == "ok"
        status, ready = await get(client, "/health/ready")
        assert (status, ready["status"]) == (200, "ready")
        assert (await post_webhook(client, payment_doc()))[0] == 201
    finally:
        await stack.redis.start()
    await _healthy(client)


async def test_kafka_down_is_unhealthy_but_ready(client: Any, db: Any, stack: Any) -> None:
    """(The embedded broker keeps topics in memory; each test's client creates its own.)"""
    await stack.kafka.stop()
    try:

        async def kafka_reported_down() -> dict[str, Any] | None:
            status, body = await get(client, "/health")
            return body if status == 503 and body["checks"]["kafka"] == "error" else None

        body = await wait_for(kafka_reported_down, timeout=15, interval=0.3)
        assert body["checks"]["database"] == "ok"
        status, ready = await get(client, "/health/ready")
        assert (status, ready["status"]) == (200, "ready")
        assert (await post_webhook(client, payment_doc()))[0] == 201
    finally:
        await stack.kafka.start()
    await _healthy(client)


async def test_postgres_down_is_unready_and_returns(client: Any, db: Any, stack: Any) -> None:
    await stack.postgres.stop()
    try:
        status, ready = await get(client, "/health/ready")
        assert status == 503
        assert ready["status"] == "unready"
        assert "database_unreachable" in ready["reasons"]
        status, body = await get(client, "/health")
        assert status == 503
        assert body["checks"]["database"] == "error"
        assert (await get(client, "/health/live"))[0] == 200
    finally:
        await stack.postgres.start()

    async def ready_again() -> bool:
        return (await get(client, "/health/ready"))[0] == 200

    await wait_for(ready_again, timeout=30, interval=0.3)
    await _healthy(client)
