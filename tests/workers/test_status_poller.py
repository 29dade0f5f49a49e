"""The status poller against a real HTTP server playing the provider: normal answers,
mapped statuses, timeouts, 5xx then success, garbage, unknown statuses and 404s."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.db.payments import Candidate, record_batch
from gateway.domain.model import Payment
from gateway.errors import ConfigError
from gateway.notify import Wakeup
from gateway.observability import metrics
from tests.conftest import TEST_SECRET, make_settings
from tests.events import queued_events
from workers.status_poller import StatusApi, StatusPoller

if TYPE_CHECKING:
    from tests.stack import TestStack

TOKEN = "provider-token-123"


class Provider:
    """Answers by reference prefix; counts calls; insists on the bearer token."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.bad_auth = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ref = request.match_info["ref"]
        self.calls[ref] += 1
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            self.bad_auth += 1
            return web.Response(status=401)
        kind = ref.split("-")[0]
        if kind == "FLAKY" and self.calls[ref] <= 2:
            return web.Response(status=503)
        if kind == "SLOW":
            await asyncio.sleep(5)
        if kind == "GARBAGE":
            return web.Response(body=b"<html>oops", content_type="application/json")
        if kind == "GONE":
            return web.Response(status=404)
        if kind == "FUTURE":  # a provider clock far ahead: would freeze the payment
            return web.json_response({"payment": {"state": "paid", "updated_at": "2099-01-01"}})
        state = {"OK": "paid", "FLAKY": "paid", "DECLINED": "declined", "WEIRD": "on_the_moon",
                 "WAIT": "processing"}[kind]  # fmt: skip
        return web.json_response(
            {"payment": {"state": state, "updated_at": "2026-11-20T10:00:00Z"}}
        )


@pytest.fixture
async def provider() -> Any:
    p = Provider()
    app = web.Application()
    app.router.add_get("/v1/payments/{ref}", p.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield p, server
    finally:
        await server.close()


@pytest.fixture
async def clean(db: asyncpg.Pool) -> asyncpg.Pool:
    await db.execute("TRUNCATE payment_service.payment_reviews, payment_service.status_poll_state")
    return db


def _channels_file(tmp_path: Path, port: int) -> str:
    path = tmp_path / "channels.toml"
    path.write_text(
        f"""
[channels.prov]
scheme = "standard"
secrets = ["{TEST_SECRET}"]

[channels.prov.status_api]
base_url = "http://127.0.0.1:{port}"
path_template = "/v1/payments/{{reference_number}}"
status_path = "payment.state"
event_time_path = "payment.updated_at"
timeout_seconds = 0.3
max_retries = 2
backoff_seconds = 0.01
token_env = "PROV_API_TOKEN"

[channels.prov.status_api.status_map]
paid = "succeeded"
declined = "failed"
processing = "pending"
"""
    )
    return str(path)


async def _seed(
    db: asyncpg.Pool, refs: list[str], *, status: str = "pending", age_hours: int = 2
) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    cands = [
        Candidate(
            Payment(r, "LA-1", "CIF-1", Decimal("10.00"), now, status=status),
            channel="prov",
            body=b"{}",
        )
        for r in refs
    ]
    async with db.acquire() as conn:
        await record_batch(conn, cands, source="webhook", topic="t", actor="test")
    await db.execute(
        "UPDATE payment_service.payments "
        "SET status_updated_at = now() - make_interval(hours => $2) "
        "WHERE reference_number = ANY($1)",
        refs,
        age_hours,
    )


async def _statuses(db: asyncpg.Pool) -> dict[str, str]:
    rows = await db.fetch("SELECT reference_number, status FROM payment_service.payments")
    return {r["reference_number"]: r["status"] for r in rows}


def test_status_api_config_is_checked_and_interprets_answers() -> None:
    with pytest.raises(ConfigError, match="base_url"):
        StatusApi.from_config("x", {"base_url": "ftp://nope"})
    with pytest.raises(ConfigError, match="token_env"):
        StatusApi.from_config("x", {"base_url": "http://a", "token_env": "NOPE_UNSET"}, environ={})
    api = StatusApi.from_config(
        "x", {"base_url": "http://a/", "path_template": "/p/{reference_number}"}
    )
    assert api.url("A B/1") == "http://a/p/A%20B%2F1"
    assert api.interpret(b'{"status": "failed"}').status == "failed"
    assert api.interpret(b'{"status": "exploded"}').kind == "unknown_status"
    assert api.interpret(b"[1, 2").kind == "garbage"
    assert api.interpret(b'{"state": "failed"}').kind == "garbage"


async def test_poller_applies_answers_and_flags_what_it_cannot_resolve(
    stack: TestStack,
    clean: asyncpg.Pool,
    provider: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = clean
    prov, server = provider
    monkeypatch.setenv("PROV_API_TOKEN", TOKEN)
    settings = make_settings(
        stack,
        channels_file=_channels_file(tmp_path, server.port),
        reconcile_stale_after_seconds=60,
        reconcile_concurrency=3,
    )
    stuck = [
        "OK-1",
        "OK-2",
        "DECLINED-1",
        "FLAKY-1",
        "SLOW-1",
        "GARBAGE-1",
        "WEIRD-1",
        "GONE-1",
        "WAIT-1",
        "FUTURE-1",
    ]
    await _seed(db, stuck)
    await _seed(db, ["OK-fresh"], age_hours=0)  # pending, but not for long enough
    await _seed(db, ["OK-done"], status="succeeded")  # not pending
    errors_before = metrics.status_poll.labels("error")._value.get()

    wake = Wakeup()
    poller = StatusPoller(db, settings, wake)
    await poller.on_start()
    try:
        await poller.burst(max_rounds=5)
        statuses = await _statuses(db)
        assert statuses["OK-1"] == statuses["OK-2"] == statuses["FLAKY-1"] == "succeeded"
        assert statuses["DECLINED-1"] == "failed"
        for ref in ("SLOW-1", "GARBAGE-1", "WEIRD-1", "GONE-1", "WAIT-1", "FUTURE-1", "OK-fresh"):
            assert statuses[ref] == "pending", ref
        assert prov.calls["FLAKY-1"] == 3 and prov.calls["SLOW-1"] == 3
        assert "OK-fresh" not in prov.calls and "OK-done" not in prov.calls
        assert prov.bad_auth == 0
        assert metrics.status_poll.labels("error")._value.get() == errors_before + 1

        reviews = await db.fetch(
            "SELECT reference_number, reason, provider_status FROM payment_service.payment_reviews"
        )
        assert {(r["reference_number"], r["reason"]) for r in reviews} == {
            ("GARBAGE-1", "garbage"),
            ("WEIRD-1", "unknown_status"),
            ("GONE-1", "not_found"),
            ("FUTURE-1", "future_event_time"),
        }
        events = await queued_events(db, "event_type = 'payment.status_changed'")
        assert sorted(e["key"] for e in events) == ["DECLINED-1", "FLAKY-1", "OK-1", "OK-2"]
        assert all(b'"cause":"status_poll"' in e["payload"] for e in events)
        stored = await db.fetchval(
            "SELECT provider_event_at FROM payment_service.payments WHERE reference_number = 'OK-1'"
        )
        assert stored == datetime(2026, 11, 20, 10, tzinfo=UTC)

        # Asked once per stale period: another round asks nobody again.
        before = sum(prov.calls.values())
        await poller.burst(max_rounds=5)
        assert sum(prov.calls.values()) == before
    finally:
        await poller.on_stop()


async def test_poller_round_applies_parked_updates_of_payments_recorded_without_the_hook(
    stack: TestStack, clean: asyncpg.Pool
) -> None:
    db = clean
    await _seed(db, ["STAGED-1"], age_hours=0)
    await db.execute(
        "INSERT INTO payment_service.pending_status_updates (reference_number, status, channel) "
        "VALUES ('STAGED-1', 'failed', 'generic')"
    )
    poller = StatusPoller(db, make_settings(stack), Wakeup())
    try:
        assert await poller.run_once() is False
    finally:
        await poller.on_stop()
    assert (await _statuses(db))["STAGED-1"] == "failed"
    assert await db.fetchval("SELECT count(*) FROM payment_service.pending_status_updates") == 0
