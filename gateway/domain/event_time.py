"""The bounds on a provider's event time, the same on every path that carries one.

A payment's `provider_event_at` orders its status changes: an event older than the one
applied is stale. A time far in the future would therefore make every later, genuine
event look stale and freeze the payment, so it is refused (422 naming the field) before
anything is applied or parked: in a full payment body, a status-only delivery (applied
or deferred) and a status API answer alike. The bound is the one payment dates have
(PAYMENT_DATE_MAX_FUTURE_DAYS ahead of now). Staging rows carry no event time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.errors import ValidationError

FIELD = "event_time"


def latest_event_time(now: datetime, max_future_days: int) -> datetime:
    """The latest acceptable provider event time (naive UTC)."""
    if now.tzinfo is not None:
        now = now.astimezone(UTC).replace(tzinfo=None)
    return now + timedelta(days=max_future_days)


def check_event_time(
    value: datetime | None, latest: datetime, field: str = FIELD
) -> datetime | None:
    """`value` (naive UTC, or None when the provider sent none) if it is not later than
    `latest`; else a ValidationError naming `field`."""
    if value is not None and value > latest:
        raise ValidationError(field, f"too far in the future: after {latest:%Y-%m-%d}")
    return value
