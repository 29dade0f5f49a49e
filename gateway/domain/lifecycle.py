"""The payment status state machine: may this event change what we recorded?

Providers deliver status webhooks at least once and out of order, and some are
lost. The rules below make applying events order-insensitive in the only way
that matters: the recorded status only ever moves forward.

Transition table (row = current, column = new; "." = same status):

    current \\ new   pending  succeeded  failed  reversed  refunded
    pending          .        UPDATED    UPDATED UPDATED*  UPDATED*
    succeeded        STALE    .          STALE   UPDATED   UPDATED
    failed           STALE    STALE      .       STALE     STALE
    reversed         STALE    STALE      STALE   .         STALE
    refunded         STALE    STALE      STALE   STALE     .

    * the succeeded webhook was lost; a reversal or refund implies the payment
      had succeeded, so moving there is forward progress, not a guess.

Order of checks: same status -> UNCHANGED ("same_status"); an event whose
provider time is strictly older than the applied one -> STALE ("older_event"),
even when the move would be legal; leaving a final state -> STALE
("final_state"); any other illegal move -> STALE ("regression"); otherwise
UPDATED ("applied"). Without both times the transition alone decides.

STALE is an outcome, not an error: the provider must not retry it, so the
caller acknowledges it and counts it. After an UPDATED decision the caller
should store the new event's time when it has one and keep the old one
otherwise, so a later event without a time cannot erase the ordering evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

__all__ = ["FINAL_STATES", "TRANSITIONS", "Decision", "Outcome", "decide"]

FINAL_STATES = frozenset({"failed", "reversed", "refunded"})

TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"succeeded", "failed", "reversed", "refunded"}),
    "succeeded": frozenset({"reversed", "refunded"}),
    "failed": frozenset(),
    "reversed": frozenset(),
    "refunded": frozenset(),
}


class Outcome(StrEnum):
    UPDATED = "updated"
    STALE = "stale"
    UNCHANGED = "duplicate"


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    reason: str  # same_status | older_event | final_state | regression | applied


_SAME = Decision(Outcome.UNCHANGED, "same_status")
_OLDER = Decision(Outcome.STALE, "older_event")
_FINAL = Decision(Outcome.STALE, "final_state")
_REGRESSION = Decision(Outcome.STALE, "regression")
_APPLIED = Decision(Outcome.UPDATED, "applied")


def decide(
    current: str,
    current_event_at: datetime | None,
    new: str,
    new_event_at: datetime | None,
) -> Decision:
    """Decide whether `new` (reported at `new_event_at`) replaces `current`.

    Unknown statuses raise ValueError: validation admits only known ones, so
    seeing another here is a bug, not provider input.
    """
    allowed = _check(current)
    _check(new)
    if new == current:
        return _SAME
    if (
        current_event_at is not None
        and new_event_at is not None
        and _naive_utc(new_event_at) < _naive_utc(current_event_at)
    ):
        return _OLDER
    if current in FINAL_STATES:
        return _FINAL
    if new not in allowed:
        return _REGRESSION
    return _APPLIED


def _check(status: str) -> frozenset[str]:
    try:
        return TRANSITIONS[status]
    except (KeyError, TypeError):
        raise ValueError(f"unknown payment status {status!r:.40}") from None


def _naive_utc(value: datetime) -> datetime:
    # Stored times are naive UTC; tolerate an aware one rather than raise TypeError.
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)
