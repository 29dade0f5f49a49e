"""What Prometheus and the operator see: every metric moves when its event happens, the
gauges follow the database, and the stats endpoint adds up today's traffic."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import appkeys
from gateway.db import counts
from gateway.observability import exposition, gauges, stats
from gateway.observability.stats import DailyBaseline, midnight_utc, webhook_stats
from tests.conftest import RESET_CURSORS, wait_for
from tests.webhooks import payment_doc, post_webhook, signed_headers

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


async def scrape(client: Any) -> Samples:
    resp = await client.get("/metrics")
    assert resp.status == 200
    return parse(await resp.text())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def ops_headers(client: Any) -> dict[str, str]:
    """A read token for the ops API."""
    from gateway.security.auth import READ, mint_token

    secret = client.server.app[appkeys.SETTINGS].admin_jwt_secret
    return {"Authorization": f"Bearer {mint_token(secret, 'test-ops', [READ])}"}


@pytest.fixture
def fast_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gauges, "REFRESH_SECONDS", 0.1)
    monkeypatch.setattr(stats, "STATS_CACHE_SECONDS", 0.0)


# ---------------------------------------------------------------- /metrics


async def test_metrics_are_prometheus_text(client: Any) -> None:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert "version=" in resp.headers["Content-Type"]
    names = {f.name for f in text_string_to_metric_families(await resp.text())}
    for expected in (
        "paygate_webhook_requests",
        "paygate_webhook_request_duration_seconds",
        "paygate_signature_failures",
        "paygate_dedup_hits",
        "paygate_write_batch_size",
        "paygate_outbox_pending",
        "paygate_staging_backlog",
        "paygate_db_pool_connections",
    ):
        assert expected in names


async def test_metrics_off_is_404(make_client: Any) -> None:
    client = await make_client(enable_metrics=False)
    resp = await client.get("/metrics")
    assert resp.status == 404


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_metrics_port_serves_metrics_alone(make_client: Any) -> None:
    port = _free_port()
    await make_client(metrics_port=port)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
            assert resp.status == 200
            assert "paygate_webhook_requests_total" in await resp.text()
        async with session.get(f"http://127.0.0.1:{port}/health") as resp:
            assert resp.status == 404


async def test_created_payment_moves_request_and_batch_metrics(client: Any, db: Any) -> None:
    before = await scrape(client)
    status, _, _ = await post_webhook(client, payment_doc())
    assert status == 201
    after = await scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("paygate_webhook_requests_total", channel="generic", outcome="created") == 1
    assert delta("paygate_webhook_request_duration_seconds_count", channel="generic") == 1
    assert delta("paygate_write_batch_size_count") == 1
    assert delta("paygate_write_batch_size_sum") == 1
    assert delta("paygate_write_commit_duration_seconds_count") == 1


async def test_duplicate_moves_memory_dedup_counter(client: Any, db: Any) -> None:
    doc = payment_doc()
    assert (await post_webhook(client, doc))[0] == 201
    before = await scrape(client)
    status, body, _ = await post_webhook(client, doc)
    after = await scrape(client)

    assert (status, body["status"]) == (200, "duplicate")
    memory = ("paygate_dedup_hits_total", {"layer": "memory"})
    assert value(after, memory[0], **memory[1]) - value(before, memory[0], **memory[1]) == 1
    dup = {"channel": "generic", "outcome": "duplicate"}
    assert (
        value(after, "paygate_webhook_requests_total", **dup)
        - value(before, "paygate_webhook_requests_total", **dup)
        == 1
    )


async def test_bad_signature_moves_reason_counter(client: Any, db: Any) -> None:
    labels = {"channel": "generic", "reason": "signature_mismatch"}
    before = await scrape(client)
    body = orjson.dumps(payment_doc())
    headers = signed_headers(body, key=b"not-the-configured-secret-at-all!")
    resp = await client.post("/api/v1/payments/webhook", data=body, headers=headers)
    after = await scrape(client)

    assert resp.status == 401
    name = "paygate_signature_failures_total"
    assert value(after, name, **labels) - value(before, name, **labels) == 1
    unauthorized = {"channel": "generic", "outcome": "unauthorized"}
    name = "paygate_webhook_requests_total"
    assert value(after, name, **unauthorized) - value(before, name, **unauthorized) == 1


# ---------------------------------------------------------------- gauges


async def test_gauges_follow_the_database(make_client: Any, db: Any, fast_refresh: None) -> None:
    client = await make_client()
    await db.executemany(
        """INSERT INTO payment_service.payment_staging
           (reference_number, loan_account_number, cif, amount, payment_date)
           VALUES ($1, 'LA-1', 'CIF-1', 10.00, now())""",
        [(f"STG-{uuid.uuid4().hex[:12]}",) for _ in range(3)],
    )
    assert (await post_webhook(client, payment_doc()))[0] == 201  # relay off: the log keeps it

    async def gauges_caught_up() -> Samples | None:
        s = await scrape(client)
        ok = value(s, "paygate_staging_backlog") == 3 and value(s, "paygate_outbox_pending") == 1
        return s if ok else None

    samples = await wait_for(gauges_caught_up, timeout=10)
    assert value(samples, "paygate_outbox_oldest_age_seconds") >= 0
    assert value(samples, "paygate_dead_letters") == 0
    assert value(samples, "paygate_db_pool_connections", state="max") == 6

    await db.execute(RESET_CURSORS)  # as if a relay had published it
    await _dead_letter(db)
    await db.execute("UPDATE payment_service.payment_staging SET processed = true")

    async def dead_lettered() -> bool:
        s = await scrape(client)
        return (
            value(s, "paygate_dead_letters") == 1
            and value(s, "paygate_outbox_pending") == 0
            and value(s, "paygate_staging_backlog") == 0
        )

    await wait_for(dead_lettered, timeout=10)


async def _dead_letter(db: Any) -> None:
    await db.execute(
        """INSERT INTO payment_service.outbox
           (event_id, event_type, topic, key, payload, attempts, dead_lettered_at)
           VALUES (gen_random_uuid(), 'payment.recorded', 't', 'k-dead', '\\x00'::bytea, 10,
                   now())"""
    )


async def _fill_outbox(db: Any, rows: int) -> None:
    """`rows` pending outbox events, one key each (a pool or a connection)."""
    await db.execute(
        """INSERT INTO payment_service.outbox (event_id, event_type, topic, key, payload)
           SELECT gen_random_uuid(), 'payment.recorded', 't', 'k' || g, '\\x00'::bytea
           FROM generate_series(1, $1) g""",
        rows,
    )


async def test_outbox_pending_gauge_stops_counting_at_the_cap(
    make_client: Any, db: Any, fast_refresh: None
) -> None:
    """A backlog past the cap reads as the cap: each refresh counts at most that many rows
    (a Kafka outage must not turn the gauge into a growing scan every few seconds)."""
    client = await make_client()
    cap = counts.PENDING_COUNT_MAX
    await _fill_outbox(db, cap + 5)

    async def capped() -> bool:
        return value(await scrape(client), "paygate_outbox_pending") == cap

    await wait_for(capped, timeout=10)


async def test_outbox_counts_stay_on_their_index_without_statistics(db: Any) -> None:
    """A new outbox has no statistics; the dead-letter count must not scan it whole."""
    async with db.acquire() as conn:
        await _fill_outbox(conn, 5000)
        # What a new deployment looks like before autovacuum's first ANALYZE.
        await conn.execute(
            "DELETE FROM pg_statistic WHERE starelid = 'payment_service.outbox'::regclass"
        )

        async def scans() -> tuple[int, int]:
            await conn.execute("SELECT pg_stat_force_next_flush()")
            row = await conn.fetchrow(
                """SELECT t.seq_scan, i.idx_scan FROM pg_stat_user_tables t
                   JOIN pg_stat_user_indexes i ON i.relid = t.relid
                   WHERE t.relid = 'payment_service.outbox'::regclass
                     AND i.indexrelname = 'idx_outbox_dead'"""
            )
            return int(row["seq_scan"]), int(row["idx_scan"])

        seq_before, idx_before = await scans()
        assert await conn.fetchval("SELECT payment_service.outbox_dead_letters()") == 0
        assert await conn.fetchval("SELECT payment_service.outbox_pending(10)") == 10
        seq_after, idx_after = await scans()
    assert seq_after == seq_before
    assert idx_after == idx_before + 1


async def test_default_partition_gauge_counts_outliers(
    make_client: Any, db: Any, fast_refresh: None
) -> None:
    client = await make_client()
    await db.execute(
        """INSERT INTO payment_service.payments
           (id, reference_number, loan_account_number, cif, amount, payment_date, source)
           VALUES ($1, $2, 'LA-1', 'CIF-1', 5.00, '1990-01-15', 'staging')""",
        uuid.uuid4(),
        f"OLD-{uuid.uuid4().hex[:12]}",
    )
    expected = {
        t: await db.fetchval(f"SELECT count(*) FROM payment_service.{t}_default")
        for t in ("payments", "webhook_events", "audit_log")
    }
    assert expected["payments"] >= 1

    async def counted() -> bool:
        s = await scrape(client)
        return all(
            value(s, "paygate_partition_default_rows", table=t) == n for t, n in expected.items()
        )

    await wait_for(counted, timeout=10)


async def test_only_the_first_process_of_a_host_queries_the_database_gauges(db: Any) -> None:
    from gateway.observability.gauges import GaugeRefresher

    rounds = {"first": 0, "sibling": 0}

    def counting(role: str) -> Any:
        def pool_gauges() -> None:
            rounds[role] += 1

        return pool_gauges

    first = GaugeRefresher(db, counting("first"))
    sibling = GaugeRefresher(db, counting("sibling"))
    tasks = [
        asyncio.create_task(first.run(0.02)),
        asyncio.create_task(sibling.run(0.02, database=False)),
    ]

    async def both_ran_rounds() -> bool:
        return rounds["first"] >= 3 and rounds["sibling"] >= 3

    try:
        await wait_for(both_ran_rounds, timeout=10)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert first.last is not None  # the first process counted the outbox and the rest
    assert sibling.last is None  # the sibling never queried; its pool gauges still move


async def test_health_reports_dead_letters_in_a_sibling_process(
    make_client: Any, db: Any, fast_refresh: None
) -> None:
    await make_client()
    await _dead_letter(db)
    sibling = await make_client(database_gauges=False)
    resp = await sibling.get("/health")
    warnings = (await resp.json())["checks"]["warnings"]
    assert any("1 outbox events dead-lettered" in w for w in warnings), warnings


# ---------------------------------------------------------------- stats


async def test_stats_shape_and_todays_figures(
    make_client: Any, db: Any, fast_refresh: None
) -> None:
    client = await make_client()
    docs = [payment_doc() for _ in range(3)]
    for doc in docs:
        assert (await post_webhook(client, doc))[0] == 201
    assert (await post_webhook(client, docs[0]))[0] == 200  # duplicate from memory
    assert (await post_webhook(client, {**docs[1], "amount": "999.99"}))[0] == 409  # conflict
    await db.executemany(
        """INSERT INTO payment_service.payment_staging
           (reference_number, loan_account_number, cif, amount, payment_date)
           VALUES ($1, 'LA-1', 'CIF-1', 10.00, now())""",
        [(f"STG-{uuid.uuid4().hex[:12]}",) for _ in range(2)],
    )
    await db.executemany(
        """INSERT INTO payment_service.staging_process_log
           (batch_start_id, batch_end_id, total_records, processed_records, status,
            duration_ms, started_at, completed_at)
           VALUES (1, 10, 10, $1, 'completed', $2, $3, $3)""",
        [(7, 10.0, datetime.now(UTC)), (3, 30.0, datetime.now(UTC)),
         (50, 1000.0, midnight_utc().replace(year=2000))],
    )  # fmt: skip

    resp = await client.get("/api/v1/payments/stats", headers=ops_headers(client))
    assert resp.status == 200
    stats = await resp.json()

    assert set(stats) == {"staging", "webhooks"}
    assert stats["staging"] == {
        "processed_today": 10,
        "pending_count": 2,
        "average_batch_time_ms": 20.0,
    }
    webhooks = stats["webhooks"]
    assert set(webhooks) == {"received_today", "duplicate_rate", "average_response_time_ms"}
    # 3 created + 1 conflict reached the database; the duplicate was answered from memory:
    # all five were answered, so all five are counted.
    assert webhooks["received_today"] == 5
    assert webhooks["duplicate_rate"] == pytest.approx(0.2)
    assert 0 <= webhooks["duplicate_rate"] <= 1
    assert webhooks["average_response_time_ms"] > 0


async def test_stats_needs_an_ops_token(client: Any, db: Any) -> None:
    resp = await client.get("/api/v1/payments/stats")
    assert resp.status == 401


async def test_stats_is_503_without_the_database(
    make_client: Any, db: Any, stack: Any, fast_refresh: None
) -> None:
    client = await make_client()
    await stack.postgres.stop()
    try:
        resp = await client.get("/api/v1/payments/stats", headers=ops_headers(client))
        assert resp.status == 503
        assert (await resp.json())["error"] == "database_unavailable"
    finally:
        await stack.postgres.start()


# ---------------------------------------------------------------- pure pieces


def test_webhook_stats_counts_every_answer() -> None:
    out = webhook_stats(
        {"created": 6, "duplicate": 3, "unauthorized": 1},
        {"local_duplicates": 2, "duration_sum": 0.5, "duration_count": 10},
    )
    assert out == {"received_today": 10, "duplicate_rate": 0.3, "average_response_time_ms": 50.0}
    assert webhook_stats({}, {}) == {
        "received_today": 0,
        "duplicate_rate": 0.0,
        "average_response_time_ms": 0.0,
    }


def test_daily_baseline_turns_over_at_midnight() -> None:
    day1 = datetime(2026, 3, 1, 23, 59, tzinfo=UTC)
    day2 = datetime(2026, 3, 2, 0, 0, 5, tzinfo=UTC)
    b = DailyBaseline(day=day1.date())
    assert b.today({"x": 5.0}, now=day1) == {"x": 5.0}
    assert b.today({"x": 8.0}, now=day2) == {"x": 0.0}
    assert b.today({"x": 11.0}, now=day2) == {"x": 3.0}


def test_prepare_multiprocess_dir_wipes_old_files(tmp_path: Path) -> None:
    """Run in a fresh interpreter: the rule is that it runs before prometheus_client loads,
    and this one has it loaded already (which the function refuses)."""
    target = tmp_path / "metrics"
    (target / "old").mkdir(parents=True)
    (target / "counter_123.db").write_bytes(b"stale")
    script = (
        "import os, sys\n"
        "from gateway.observability.exposition import prepare_multiprocess_dir\n"
        f"d = prepare_multiprocess_dir({str(target)!r})\n"
        "assert list(d.iterdir()) == [], list(d.iterdir())\n"
        "assert os.environ['PROMETHEUS_MULTIPROC_DIR'] == str(d)\n"
        "from gateway.observability import metrics\n"
        "from gateway.observability.exposition import render_metrics\n"
        "metrics.dedup_hits.labels('memory').inc(3)\n"
        "body, ctype = render_metrics('')\n"
        "assert b'paygate_dedup_hits_total{layer=\"memory\"} 3.0' in body, body\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert not (target / "old").exists()


def test_multiprocess_scrape_adds_up_every_process(tmp_path: Path) -> None:
    """Two server processes sharing a directory: either one's /metrics reports both, and
    the stats figures read through the same registry see both."""
    target = tmp_path / "metrics"
    first = (
        "from gateway.observability.exposition import prepare_multiprocess_dir\n"
        f"prepare_multiprocess_dir({str(target)!r})\n"
        "from gateway.observability import metrics\n"
        "metrics.dedup_hits.labels('memory').inc(2)\n"
        "metrics.webhook_duration.labels('generic').observe(0.01)\n"
    )
    second = (
        "from gateway.observability import metrics\n"
        "from gateway.observability.exposition import (\n"
        "    counter_totals, metrics_registry, render_metrics)\n"
        "metrics.dedup_hits.labels('redis').inc(3)\n"
        "metrics.dedup_hits.labels('database').inc(4)\n"
        "metrics.webhook_duration.labels('generic').observe(0.03)\n"
        "body, _ = render_metrics('')\n"
        "assert b'paygate_dedup_hits_total{layer=\"memory\"} 2.0' in body, body\n"
        "assert b'paygate_dedup_hits_total{layer=\"redis\"} 3.0' in body, body\n"
        "totals = counter_totals(metrics_registry())\n"
        "assert totals['local_duplicates'] == 5, totals\n"
        "assert totals['duration_count'] == 2, totals\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", first], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    env["PROMETHEUS_MULTIPROC_DIR"] = str(target)  # a sibling inherits the prepared dir
    done = subprocess.run(
        [sys.executable, "-c", second], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_prepare_multiprocess_dir_refuses_once_prometheus_is_loaded(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        exposition.prepare_multiprocess_dir(tmp_path / "m")
    assert not (tmp_path / "m").exists()
