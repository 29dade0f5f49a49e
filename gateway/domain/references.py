"""The one rule for identifiers: what a reference may contain and the form it is kept in.

Webhooks, staging rows and statement lines all pass through `normalize_reference`, so
a reference recorded from one side is found from the other. The rule:

1. refuse control characters and every *format* character (Unicode category Cf: bidi
   controls such as U+202E, zero-width spaces and joiners, U+FEFF, soft hyphens, tags).
   They are invisible, so `"INV-1001\\u202e\\u200b"` would look like `INV-1001` in the
   console while being a different payment;
2. trim whitespace at both ends (what `str.strip()` calls whitespace; statements always
   stripped their cells, webhooks did not, so `"REC-1 "` could never match);
3. keep the result in Unicode normalisation form C (the composed form every editor and
   spreadsheet produces), so `"é"` typed as one code point or as `e` + U+0301 is one
   reference.

Letter case is kept: references are case-sensitive (a case-only difference is offered
to the operator as a suggested match during reconciliation, never applied by itself).
Postgres applies the same rule in `payment_service.normalize_reference` (sql/140), which
the staging batch uses; tests/gateway/domain/test_references.py holds the two together.
"""

from __future__ import annotations

import re
import sys
import unicodedata

# Control characters (C0, DEL, C1), lone surrogates (cannot be stored) and the format
# characters, as one regex class: identifiers containing any of them are refused.
_FORMAT = [p for p in range(sys.maxunicode + 1) if unicodedata.category(chr(p)) == "Cf"]


def _class(points: list[int]) -> str:
    ranges: list[list[int]] = []
    for p in points:
        if ranges and ranges[-1][1] == p - 1:
            ranges[-1][1] = p
        else:
            ranges.append([p, p])
    return "".join(
        re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
        for a, b in ranges
    )


FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff" + _class(_FORMAT) + "]")
FORBIDDEN_DETAIL = "contains control or invalid characters"


def forbidden(value: str) -> bool:
    """True when `value` holds a character no identifier may hold."""
    return FORBIDDEN.search(value) is not None


def normalize_reference(value: str) -> str:
    """The stored form of an identifier already checked with `forbidden`: trimmed, NFC."""
    value = value.strip()
    if value.isascii():  # the common case: ASCII is always in NFC
        return value
    return unicodedata.normalize("NFC", value).strip()


def reference_or_error(value: str, max_len: int) -> str:
    """A statement cell or status-update reference under the rule; ValueError says why."""
    if value.isascii():  # a statement's million lines: the only forbidden ASCII is control
        if not value.isprintable():
            raise ValueError(f"reference_number {FORBIDDEN_DETAIL}")
        ref = value.strip()
    elif forbidden(value):
        raise ValueError(f"reference_number {FORBIDDEN_DETAIL}")
    else:
        ref = normalize_reference(value)
    if not ref:
        raise ValueError("reference_number is empty")
    if len(ref) > max_len:
        raise ValueError(f"reference_number is longer than {max_len} characters")
    return ref
