"""Dates and limits a user can predict, through the real app and Postgres (issue 27, 5).

A provider's `payment_date` keeps the calendar day the provider sent (partitions and
reconciliation use it), the instant sits beside it, and events still carry the instant
in UTC. A refusal for a limit names the limit; an oversized body is its own outcome.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from prometheus_client import REGISTRY

from gateway.db.event_log import queued_events_sql
from gateway.domain.model import AMOUNT_MAX
from gateway.observability import metrics
from tests.gateway.http.ops_helpers import auth, get
from tests.webhooks import payment_doc, post_webhook

# The two offsets, one more that is still the 23rd where it was sent, and the
# last evening of a month, whose UTC instant is already in the next month.
SENT = {
    "D-IST": "2026-11-24T01:00:00+05:30",
    "D-EST": "2026-11-24T23:30:00-05:00",
    "D-EVE": "2026-11-23T22:00:00-05:00",
    "D-MONTH": "2026-11-30T23:30:00-05:00",
}


async def stored(db: asyncpg.Pool) -> dict[str, asyncpg.Record]:
    rows = await db.fetch(
        "SELECT reference_number, payment_date, payment_at, date_trunc('month', payment_date)"
        " AS partition_month FROM payment_service.payments WHERE reference_number LIKE 'D-%'"
    )
    return {r["reference_number"]: r for r in rows}


async def test_the_calendar_day_the_provider_sent_is_kept(client: Any, db: asyncpg.Pool) -> None:
    for ref, sent in SENT.items():
        status, body, _ = await post_webhook(client, payment_doc(ref, payment_date=sent))
        assert status == 201, body
    rows = await stored(db)
    assert {ref: rows[ref]["payment_date"] for ref in SENT} == {
        "D-IST": datetime(2026, 11, 24, 1, 0),  # was 2026-11-23 19:30
        "D-EST": datetime(2026, 11, 24, 23, 30),  # was 2026-11-25 04:30
        "D-EVE": datetime(2026, 11, 23, 22, 0),
        "D-MONTH": datetime(2026, 11, 30, 23, 30),
    }
    assert rows["D-IST"]["payment_at"] == datetime(2026, 11, 23, 19, 30, tzinfo=UTC)
    assert rows["D-EST"]["payment_at"] == datetime(2026, 11, 25, 4, 30, tzinfo=UTC)
    assert rows["D-MONTH"]["partition_month"] == datetime(2026, 11, 1)  # not December

    # The event keeps its contract: payment_date is the instant, in UTC.
    payloads = {
        r["key"]: orjson.loads(r["payload"])["payment"]["payment_date"]
        for r in await db.fetch(f"SELECT key, payload FROM ({queued_events_sql()}) e")
    }
    assert payloads["D-IST"] == "2026-11-23T19:30:00Z"
    assert payloads["D-EST"] == "2026-11-25T04:30:00Z"

    # Operators see the provider's day and the instant.
    status, page = await get(client, "/api/v1/payments", reference_number="D-IST")
    assert status == 200
    (item,) = page["items"]
    assert item["payment_date"].startswith("2026-11-24T01:00:00")
    assert item["payment_at"].startswith("2026-11-23T19:30:00")


async def test_a_statement_dated_the_24th_matches_what_was_sent_on_the_24th(
    client: Any, db: asyncpg.Pool
) -> None:
    for ref, sent in SENT.items():
        status, body, _ = await post_webhook(client, payment_doc(ref, amount="10.00",
                                                                 payment_date=sent))  # fmt: skip
        assert status == 201, body
    statement = (
        "reference_number,amount,payment_date\nD-IST,10.00,2026-11-24\nD-EST,10.00,2026-11-24\n"
    )
    resp = await client.post(
        "/api/v1/reconciliation/statements",
        params={"source": "bank-dates", "keep_matched": "true"},
        data=statement.encode(),
        headers=auth(client),
    )
    summary = await resp.json()
    assert resp.status == 201, summary
    counts = {k: v for k, v in summary["counts"].items() if v}
    # D-EVE was sent on the 23rd: it is not the 24th's business, however UTC counts it.
    assert counts == {"matched": 2}, counts


async def test_refusals_name_the_limit_they_crossed(client: Any, db: asyncpg.Pool) -> None:
    today = datetime.now(UTC)
    cases = {
        "amount": (payment_doc(amount="99999999999999.00"), f"maximum amount {AMOUNT_MAX}"),
        "payment_date": (
            payment_doc(payment_date=(today + timedelta(days=40)).date().isoformat()),
            "31 days ahead, the latest accepted is",
        ),
    }
    for field, (doc, limit) in cases.items():
        status, body, _ = await post_webhook(client, doc)
        assert (status, body["field"]) == (422, field), body
        assert limit in body["detail"], body
    months = today.year * 12 + today.month - 1 - 12  # PARTITION_RETENTION_MONTHS = 12
    oldest = f"{months // 12}-{months % 12 + 1:02d}-01"
    status, body, _ = await post_webhook(client, payment_doc(payment_date="2001-01-01"))
    assert (status, body["detail"]) == (422, f"too old: the oldest date accepted is {oldest}")


def _requests(outcome: str) -> float:
    metrics.flush_pending()
    labels = {"channel": "generic", "outcome": outcome}
    return REGISTRY.get_sample_value("paygate_webhook_requests_total", labels) or 0.0


async def test_an_oversized_body_is_counted_and_logged_as_its_own_outcome(
    make_client: Any, caplog: Any
) -> None:
    client = await make_client(max_body_bytes=2048)
    before, errors = _requests("payload_too_large"), _requests("error")
    doc = payment_doc(metadata={"pad": "x" * 4096})
    with caplog.at_level(logging.INFO, logger="paygate.webhook"):
        status, body, _ = await post_webhook(client, doc)
    assert (status, body["error"]) == (413, "payload_too_large")
    assert body["detail"] == "the body exceeds the maximum of 2048 bytes"
    assert "payload_too_large" in metrics.WEBHOOK_OUTCOMES  # at zero from the first scrape
    assert _requests("payload_too_large") == before + 1
    assert _requests("error") == errors
    outcomes = [getattr(r, "outcome", None) for r in caplog.records if r.name == "paygate.webhook"]
    assert outcomes == ["payload_too_large"]
