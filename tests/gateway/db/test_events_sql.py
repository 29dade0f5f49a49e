"""The webhook writer's events are built by Postgres (gateway/db/events_sql.py):
they must be exactly what `tests.oracles.payment_recorded` builds in Python."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from gateway.db.payments import Candidate, record_batch
from gateway.domain import events
from gateway.domain.model import AMOUNT_MAX, Payment
from tests.events import QUEUED
from tests.oracles import payment_recorded

DAY = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(days=2)
ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z")


def assert_same_recorded_event(stored: Mapping[str, Any], expected: events.OutboxEvent) -> None:
    """A queued event (event_id, event_type, key, payload) built by Postgres is the event the
    Python builder makes, up to its own id and timestamp (checked for shape instead)."""
    got, want = orjson.loads(stored["payload"]), orjson.loads(expected.payload)
    assert got["event_id"] == str(stored["event_id"])
    assert ISO_Z.fullmatch(got["timestamp"]), got["timestamp"]
    for event in (got, want):
        del event["event_id"], event["timestamp"]
    assert got == want, expected.key
    assert (stored["event_type"], stored["key"]) == (events.PAYMENT_RECORDED, expected.key)


def payment(ref: str, **changes: object) -> Payment:
    fields: dict[str, object] = {
        "reference_number": ref,
        "loan_account_number": "LA-1",
        "cif": "CIF-1",
        "amount": Decimal("10.50"),
        "payment_date": DAY,
        "payment_channel": "web",
    }
    fields.update(changes)
    return Payment(**fields)  # type: ignore[arg-type]


async def test_webhook_events_match_the_python_builder(db: asyncpg.Pool) -> None:
    tricky = [
        payment("E-PLAIN"),
        payment("E-UNICODE-ünï€😀", loan_account_number="LÄ-€", cif="ÇIF-😀"),
        payment("E-CENT", amount=Decimal("0.01"), payment_date=DAY + timedelta(microseconds=1)),
        payment("E-WHOLE", amount=Decimal("100.00"), payment_date=DAY.replace(hour=0)),
        payment("E-MAX", amount=AMOUNT_MAX, payment_channel=None),
        payment("E-QUOTES", loan_account_number="L\"\\'", payment_channel='"ch"\\'),
        payment("E-META", metadata={"nested": {"list": [1, 2.5, "x", None, True]}, "é": "😀"}),
        payment("E-STATUS", status="pending", metadata={}),
        # sql/110: a third decimal, a currency, a provider's offset kept beside its day.
        payment("E-KWD", amount=Decimal("12.345"), currency="KWD"),
        payment("E-KWD-ROUND", amount=Decimal("12.34"), currency="KWD"),
        payment("E-JPY", amount=Decimal("5000.00"), currency="JPY"),
        payment(
            "E-OFFSET",
            payment_date=DAY.replace(hour=1),
            payment_at=DAY.replace(hour=1) - timedelta(hours=5, minutes=30),
        ),
    ]
    candidates = [Candidate(p, "generic", f"msg-{p.reference_number}", b"{}") for p in tricky]
    async with db.acquire() as conn:
        outcome = await record_batch(conn, candidates, source="webhook", topic="t", actor="webhook")
    assert outcome.lost == set() and outcome.recorded == len(candidates)
    for cand in candidates:
        p = cand.payment
        stored = await db.fetchrow(
            f"SELECT event_id, event_type, key, payload FROM {QUEUED} e WHERE key = $1",
            p.reference_number,
        )
        assert stored is not None, p.reference_number
        expected = payment_recorded(
            payment_id=cand.payment_id,
            reference_number=p.reference_number,
            loan_account_number=p.loan_account_number,
            cif=p.cif,
            amount=p.amount,
            payment_date=p.payment_date,
            payment_channel=p.payment_channel,
            source="webhook",
            metadata=p.metadata,
            status=p.status,
            currency=p.currency,
            payment_at=p.payment_at,
        )
        assert_same_recorded_event(stored, expected)
        if p.currency is not None:  # on the topic right after the amount it qualifies
            assert f'"amount" : "{p.amount}", "currency" : "{p.currency}"'.encode() in bytes(
                stored["payload"]
            )
    ids = await db.fetch(f"SELECT event_id FROM {QUEUED} e")
    assert len({r["event_id"] for r in ids}) == len(candidates)  # one id per event
    assert {r["event_id"].version for r in ids} == {8}  # derived from the payment id
