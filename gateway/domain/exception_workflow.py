"""The exception workflow's rules: what an operator may do to a reconciliation item or a
payment review, and what a resolution must say.

Each exception moves open -> assigned (to a named person; may be re-assigned) ->
resolved, or straight from open to resolved (acknowledged). A resolution carries a reason
code, and `matched_manually` names the payment the line belongs to. Resolved is final:
the record of who decided what stays as it was decided.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from gateway.errors import ValidationError

ITEM, REVIEW = "item", "review"  # reconciliation_items, payment_reviews
KINDS = (ITEM, REVIEW)
OPEN, ASSIGNED, RESOLVED = "open", "assigned", "resolved"
STATES = (OPEN, ASSIGNED, RESOLVED)
UNRESOLVED = "unresolved"  # open or assigned: the queue
STATE_FILTERS = (*STATES, UNRESOLVED, "all")
RESOLUTIONS = ("fixed_upstream", "written_off", "matched_manually", "not_an_issue")
ACTIONS = ("assign", "resolve", "comment")

NAME_MAX = 255
NOTE_MAX = 4000


@dataclass(frozen=True, slots=True)
class Resolution:
    code: str
    note: str | None
    payment_id: uuid.UUID | None  # matched_manually: the payment the exception belongs to


def _text(value: object, field: str, limit: int, *, required: bool) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValidationError(field, "is required")
        return None
    if not isinstance(value, str):
        raise ValidationError(field, "must be a string")
    text = value.strip()
    if len(text) > limit:
        raise ValidationError(field, f"at most {limit} characters")
    if any(ord(c) < 32 and c not in "\n\r\t" for c in text):
        raise ValidationError(field, "contains control characters")
    return text


def assignee(value: object) -> str:
    name = _text(value, "assignee", NAME_MAX, required=True)
    assert name is not None
    if "\n" in name or "\r" in name:
        raise ValidationError("assignee", "must be one line")
    return name


def comment(value: object) -> str:
    body = _text(value, "body", NOTE_MAX, required=True)
    assert body is not None
    return body


def resolution(code: object, note: object = None, payment_id: object = None) -> Resolution:
    if code not in RESOLUTIONS:
        raise ValidationError("resolution", "must be one of " + ", ".join(RESOLUTIONS))
    text = _text(note, "note", NOTE_MAX, required=False)
    pid: uuid.UUID | None = None
    if code == "matched_manually":
        if not isinstance(payment_id, str):
            raise ValidationError("payment_id", "matched_manually names the payment (its id)")
        try:
            pid = uuid.UUID(payment_id)
        except ValueError:
            raise ValidationError("payment_id", "must be a payment id (UUID)") from None
    elif payment_id not in (None, ""):
        raise ValidationError("payment_id", "only matched_manually names a payment")
    return Resolution(str(code), text, pid)


def kind(value: object) -> str:
    if value not in KINDS:
        raise ValidationError("kind", "must be one of " + ", ".join(KINDS))
    return str(value)
