"""The one rule for references (gateway.domain.references): what is refused, how a
reference is kept, and that it is idempotent."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.domain.references import forbidden, normalize_reference, reference_or_error


@pytest.mark.parametrize(
    "text",
    ["INV-1001\u202e\u200b", "INV\u200d1", "\ufeffINV", "INV\u2066", "INV\u00ad1", "A\x00",
     "A\x85", "INV\U000e0041"],
)  # fmt: skip
def test_invisible_and_control_characters_are_refused(text: str) -> None:
    assert forbidden(text)
    with pytest.raises(ValueError, match="reference_number"):
        reference_or_error(text, 255)


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("REC-TRAIL-1 ", "REC-TRAIL-1"), ("\u3000 X \u00a0", "X"), ("e\u0301", "\u00e9"),
     ("Ünï € 😀", "Ünï € 😀"), ("a b", "a b"), ("INV-1001", "INV-1001")],
)  # fmt: skip
def test_references_are_trimmed_and_composed(sent: str, kept: str) -> None:
    assert not forbidden(sent)
    assert normalize_reference(sent) == kept


def test_an_empty_or_too_long_reference_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        reference_or_error(" \u2003 ", 255)
    with pytest.raises(ValueError, match="longer"):
        reference_or_error("x" * 256, 255)


@given(st.text(max_size=40))
def test_the_rule_is_idempotent_and_yields_nfc(text: str) -> None:
    if forbidden(text):
        return
    once = normalize_reference(text)
    assert normalize_reference(once) == once
    assert unicodedata.is_normalized("NFC", once)
    assert once == once.strip()
