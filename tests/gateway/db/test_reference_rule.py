"""Postgres applies the same rule for references as Python (sql/140's
`payment_service.normalize_reference`, used by the staging batch), and the migration's
report finds recorded references the rule would now write differently."""

from __future__ import annotations

import sys
import uuid
from datetime import datetime

import asyncpg

from gateway.domain.references import forbidden, normalize_reference

AWKWARD = [
    "plain", " lead", "trail ", "\u3000both\u2003", "\u00a0nbsp\u00a0", "\u2028sep\u2029",
    "e\u0301", "\u1100\u1161\u11a8", "A\u030a", "\u212b", "x\u0301\u0300", "\u1680 ogham",
    "\u205f\u202fnarrow", "a  b", "😀", "\uff29\uff2e\uff36", "\u0385", "\u1fee", "",
]  # fmt: skip


async def test_sql_and_python_normalise_alike(db: asyncpg.Pool) -> None:
    whitespace = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    samples = AWKWARD + [f"{w}ref{w}" for w in whitespace]
    samples = [s for s in samples if not forbidden(s)]
    got = await db.fetch(
        "SELECT s, payment_service.normalize_reference(s) AS n FROM unnest($1::text[]) s",
        samples,
    )
    assert {r["s"]: r["n"] for r in got} == {s: normalize_reference(s) for s in samples}


async def test_the_report_finds_references_the_rule_would_change(db: asyncpg.Pool) -> None:
    rows = {"KEEP-1": None, "TRAIL-1 ": None, "CLASH-1": None, "CLASH-1 ": None,
            "caf\u0065\u0301": None}  # fmt: skip
    for ref in rows:
        rows[ref] = uuid.uuid4()
        await db.execute(
            "INSERT INTO payment_service.payment_references"
            " (reference_number, payment_id, payment_date, payload_hash) VALUES ($1, $2, $3, 'x')",
            ref, rows[ref], datetime(2026, 10, 5),
        )  # fmt: skip
    found = {
        r["reference_number"]: (r["normalised"], r["collides_with"])
        for r in await db.fetch("SELECT * FROM payment_service.unnormalised_references()")
    }
    assert found == {
        "TRAIL-1 ": ("TRAIL-1", None),
        "CLASH-1 ": ("CLASH-1", rows["CLASH-1"]),
        "caf\u0065\u0301": ("caf\u00e9", None),
    }
