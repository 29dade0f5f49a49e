"""Replaying a stored delivery: its verified bytes through today's pipeline.

The bytes were verified when they arrived, so no signature is checked; everything after
the signature runs as for a new delivery (the channel's current mapping, validation,
deduplication, the writer), through the same `Pipeline.process` the webhook handler
calls. `payment_references` decides, as always, so replaying a delivery twice, or twice
at once, records its payment once: the second replay is answered duplicate.

A dry run says what a replay would do without doing it: it maps and validates the
bytes with the same pure functions, and looks the reference up, but writes nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from gateway.config import Settings
from gateway.db import deliveries
from gateway.domain.event_time import latest_event_time
from gateway.domain.model import IDENTITY_FIELDS
from gateway.domain.validation import date_window, validate_payment
from gateway.errors import NotFound, PaygateError
from gateway.ingest.channels import ChannelRegistry
from gateway.ingest.pipeline import Pipeline
from gateway.ingest.status_updates import is_status_only, parse_status_update


@dataclass(frozen=True, slots=True)
class ReplayResult:
    delivery_id: int
    status: int  # the HTTP status the pipeline answered
    outcome: str
    body: dict[str, Any]
    replay_id: int


def _outcome_of(exc: PaygateError) -> str:
    if exc.status == 409:
        return "conflict"
    if exc.status == 404:
        return "unknown_channel"
    return "invalid_json" if exc.code == "invalid_json" else "invalid"


async def replay(
    pool: asyncpg.Pool,
    pipeline: Pipeline,
    channels: ChannelRegistry,
    delivery_id: int,
    *,
    actor: str,
) -> ReplayResult:
    """Replay one stored delivery and record what happened (delivery_replays + audit).

    A 503 (the database or the writer cannot take it now) is raised, not recorded: the
    operator retries, as a provider would.
    """
    row = await deliveries.get_delivery(pool, delivery_id)
    if row is None:
        raise NotFound(f"no stored delivery {delivery_id}", code="delivery_not_found")
    channel = channels.get(row["channel"])
    if channel is None:
        status, outcome = 404, "unknown_channel"
        body: dict[str, Any] = {
            "error": "unknown_channel",
            "detail": f"channel {row['channel'][:64]!r} is not configured now",
        }
    else:
        try:
            # The stored id may have been one no signature covered: recorded, not a key.
            answer = await pipeline.process(
                channel, bytes(row["body"]), signed_id=None, headers={},
                unsigned_id=row["delivery_id"],
            )  # fmt: skip
        except PaygateError as exc:
            if exc.status >= 500:
                raise
            status, outcome, body = exc.status, _outcome_of(exc), exc.body()
        else:
            status, outcome, body = answer.status, answer.outcome, answer.body
    payment_id = body.get("payment_id") if isinstance(body.get("payment_id"), str) else None
    reference = row["reference_number"]
    if reference is None and payment_id is not None:  # the fixed mapping found it: audit by it
        reference = await deliveries.reference_of_payment(pool, payment_id)
    recorded = await deliveries.record_replay(
        pool, delivery_id, actor=actor, status=status, outcome=outcome, payment_id=payment_id,
        answer=body, reference_number=reference,
    )  # fmt: skip
    return ReplayResult(delivery_id, status, outcome, body, recorded["id"])


async def predict(
    pool: asyncpg.Pool, channels: ChannelRegistry, settings: Settings, row: Any
) -> dict[str, Any]:
    """What replaying this stored delivery would do, computed without writing anything."""
    channel = channels.get(row["channel"])
    if channel is None:
        return {"would": "refuse", "status": 404, "error": "unknown_channel"}
    try:
        fields = channel.extract(orjson.loads(bytes(row["body"])))
        if isinstance(fields, dict) and "ignored_event_type" in fields:
            return {"would": "ignore", "event_type": str(fields["ignored_event_type"])[:100]}
        if is_status_only(fields):
            latest = latest_event_time(datetime.now(UTC), settings.payment_date_max_future_days)
            update = parse_status_update(fields, latest=latest)
            return {"would": "apply_status", "reference_number": update.reference_number,
                    "status": update.status}  # fmt: skip
        window = date_window(
            datetime.now(UTC), settings.partition_retention_months,
            settings.payment_date_max_future_days,
        )  # fmt: skip
        currency, places = channel.money_of(fields)
        payment = validate_payment(fields, window=window, currency=currency, places=places)
        if channel.identity_fields != IDENTITY_FIELDS:
            payment = dataclasses.replace(payment, identity=channel.identity_fields)
    except orjson.JSONDecodeError:
        return {"would": "refuse", "status": 400, "error": "invalid_json"}
    except PaygateError as exc:
        return {"would": "refuse", "status": exc.status, **exc.body()}
    known = await deliveries.known_reference(pool, payment.reference_number)
    if known is None:
        return {"would": "create", "reference_number": payment.reference_number}
    return {
        "would": "duplicate" if known["payload_hash"] == payment.payload_hash else "conflict",
        "reference_number": payment.reference_number,
        "payment_id": str(known["payment_id"]),
    }
