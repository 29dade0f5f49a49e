"""The status state machine: every cell of the table, time ordering, and a
property that no order of delivery can make a payment's status go backwards."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.lifecycle import FINAL_STATES, TRANSITIONS, Decision, Outcome, decide
from gateway.domain.model import STATUSES

U, S, N = Outcome.UPDATED, Outcome.STALE, Outcome.UNCHANGED

# (current, new) -> expected decision with no provider times involved.
TABLE: dict[tuple[str, str], tuple[Outcome, str]] = {
    ("pending", "pending"): (N, "same_status"),
    ("pending", "succeeded"): (U, "applied"),
    ("pending", "failed"): (U, "applied"),
    ("pending", "reversed"): (U, "applied"),
    ("pending", "refunded"): (U, "applied"),
    ("succeeded", "pending"): (S, "regression"),
    ("succeeded", "succeeded"): (N, "same_status"),
    ("succeeded", "failed"): (S, "regression"),
    ("succeeded", "reversed"): (U, "applied"),
    ("succeeded", "refunded"): (U, "applied"),
    ("failed", "pending"): (S, "final_state"),
    ("failed", "succeeded"): (S, "final_state"),
    ("failed", "failed"): (N, "same_status"),
    ("failed", "reversed"): (S, "final_state"),
    ("failed", "refunded"): (S, "final_state"),
    ("reversed", "pending"): (S, "final_state"),
    ("reversed", "succeeded"): (S, "final_state"),
    ("reversed", "failed"): (S, "final_state"),
    ("reversed", "reversed"): (N, "same_status"),
    ("reversed", "refunded"): (S, "final_state"),
    ("refunded", "pending"): (S, "final_state"),
    ("refunded", "succeeded"): (S, "final_state"),
    ("refunded", "failed"): (S, "final_state"),
    ("refunded", "reversed"): (S, "final_state"),
    ("refunded", "refunded"): (N, "same_status"),
}

T0 = datetime(2026, 3, 1, 12, 0, 0)
EARLIER = T0 - timedelta(microseconds=1)
LATER = T0 + timedelta(seconds=1)


def test_table_covers_every_pair_of_statuses() -> None:
    assert set(TABLE) == {(a, b) for a in STATUSES for b in STATUSES}
    assert set(TRANSITIONS) == set(STATUSES)


@pytest.mark.parametrize(("current", "new"), sorted(TABLE))
@pytest.mark.parametrize(
    ("current_at", "new_at"),
    [(None, None), (T0, None), (None, T0), (T0, LATER), (T0, T0)],
    ids=["no-times", "new-untimed", "current-untimed", "newer", "same-time"],
)
def test_transition_table(
    current: str, new: str, current_at: datetime | None, new_at: datetime | None
) -> None:
    outcome, reason = TABLE[(current, new)]
    assert decide(current, current_at, new, new_at) == Decision(outcome, reason)


@pytest.mark.parametrize(("current", "new"), sorted(TABLE))
def test_an_older_event_is_stale_even_when_the_move_is_legal(current: str, new: str) -> None:
    decision = decide(current, T0, new, EARLIER)
    if current == new:
        assert decision == Decision(N, "same_status")
    else:
        assert decision == Decision(S, "older_event")


def test_aware_and_naive_times_compare_as_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    # 13:00+02:00 is 11:00 UTC: older than T0 (12:00 UTC naive).
    older = datetime(2026, 3, 1, 13, 0, tzinfo=plus_two)
    assert decide("pending", T0, "succeeded", older).reason == "older_event"
    newer = datetime(2026, 3, 1, 12, 0, 1, tzinfo=UTC)
    assert decide("pending", T0, "succeeded", newer).outcome is U


def test_outcome_values_are_the_response_statuses() -> None:
    assert [o.value for o in Outcome] == ["updated", "stale", "duplicate"]
    assert Outcome.UNCHANGED == "duplicate"


@pytest.mark.parametrize("status", STATUSES)
def test_final_states_are_the_ones_without_a_way_out(status: str) -> None:
    final = status in {"failed", "reversed", "refunded"}
    assert (status in FINAL_STATES) is final
    assert (not TRANSITIONS[status]) is final


@pytest.mark.parametrize("bad", ["", "SUCCEEDED", "completed", None, 1])
def test_unknown_status_is_a_programming_error(bad: object) -> None:
    with pytest.raises(ValueError, match="unknown payment status"):
        decide("pending", None, bad, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown payment status"):
        decide(bad, None, "pending", None)  # type: ignore[arg-type]


# -- property: delivery order never makes a status regress ---------------------


def precedes(a: str, b: str) -> bool:
    """The business order, written independently of the module under test."""
    return (a == "pending" and b != "pending") or (
        a == "succeeded" and b in {"reversed", "refunded"}
    )


events = st.lists(
    st.tuples(
        st.sampled_from(STATUSES),
        st.none() | st.integers(min_value=0, max_value=20).map(lambda s: T0 + timedelta(seconds=s)),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(st.data(), events)
def test_no_delivery_order_makes_a_status_regress(
    data: st.DataObject, batch: list[tuple[str, datetime | None]]
) -> None:
    ordered = data.draw(st.permutations(batch))
    status, status_at = ordered[0]
    held = [status]
    for new, new_at in ordered[1:]:
        decision = decide(status, status_at, new, new_at)
        assert (decision.outcome is N) is (new == status)
        if decision.outcome is U:
            assert precedes(status, new), (status, new)
            status = new
            if new_at is not None:
                status_at = new_at
            held.append(status)
        elif status in FINAL_STATES:
            assert decision.outcome is N or decision.reason in {"final_state", "older_event"}
    # Whatever it passed through, the payment never came back to an earlier status.
    for earlier, later in itertools.combinations(held, 2):
        assert precedes(earlier, later)
    assert not any(precedes(status, h) for h in held)
