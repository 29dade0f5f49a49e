"""The SQL staging batch must agree with the Python rules it replaces, value for value.

`workers.staging_sql` re-expresses the webhook's validation (`tests.oracles.validate_staging_row`),
`gateway.domain.model.business_hash` and the `payment.recorded` payload in SQL.
These tests stage awkward values, let Postgres decide, and compare with what Python decides for the
very same rows (read back through the pool, so both sides see identical values).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from gateway.db.server import ServerFunctions, server_version
from gateway.domain.model import AMOUNT_MAX, business_hash
from gateway.domain.references import normalize_reference
from gateway.domain.validation import DateWindow, date_window
from gateway.errors import ValidationError
from gateway.notify import Wakeup
from tests.conftest import make_settings
from tests.events import QUEUED
from tests.gateway.db.test_events_sql import assert_same_recorded_event
from tests.oracles import payment_recorded, validate_staging_row
from tests.workers.test_staging import row
from workers import staging_sql
from workers.staging import StagingWorker

NOW = datetime.now(UTC).replace(tzinfo=None)
DAY = NOW.replace(microsecond=0) - timedelta(days=2)
WINDOW = DateWindow(earliest=datetime(2024, 3, 1), latest=datetime(2024, 6, 30, 12, 0, 0, 500))
IN_WINDOW = datetime(2024, 5, 5, 5, 5, 5)


async def load(db: asyncpg.Pool, rows: list[tuple[Any, ...]]) -> list[int]:
    """Stage rows whose metadata may be any JSON value (sent as text, cast in SQL)."""
    ids = []
    for r in rows:
        meta = None if r[-1] is None else orjson.dumps(r[-1]).decode()
        ids.append(
            await db.fetchval(
                "INSERT INTO payment_service.payment_staging (reference_number,"
                " loan_account_number, cif, amount, payment_date, payment_channel, metadata)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb) RETURNING id",
                *r[:-1],
                meta,
            )
        )
    return ids


def python_verdict(record: asyncpg.Record, window: DateWindow) -> str | None:
    try:
        validate_staging_row(dict(record), window=window)
    except ValidationError as exc:
        return f"{exc.field}: {exc.detail}"
    return None


async def sql_verdicts(db: asyncpg.Pool, ids: list[int], window: DateWindow) -> dict[int, Any]:
    async with db.acquire() as conn:
        server = ServerFunctions(await server_version(conn))
    sql = staging_sql.classify_sql(staging_sql.default_rules(server), server)
    found = await db.fetch(
        sql, ids, window.earliest, window.latest, window.too_old_detail(),
        window.too_late_detail(),
    )  # fmt: skip
    return {r["id"]: r["problem"] for r in found}


async def test_classification_matches_validate_staging_row(db: asyncpg.Pool) -> None:
    d = IN_WINDOW
    micro = timedelta(microseconds=1)
    cases = [
        row("OK", payment_date=d),
        row("", payment_date=d),
        row(" \t ", payment_date=d),
        row("\u3000\u2003", payment_date=d),  # Unicode spaces only: empty
        row("\x85", payment_date=d),  # NEL is whitespace: empty, not "control"
        row("a\x85b", payment_date=d),  # ...but a control character inside a value
        row("ref\x01", payment_date=d),
        row("ref\x7f", payment_date=d),
        row("ref\x9f", payment_date=d),
        row("ref\u200b", payment_date=d),  # zero-width space: invisible, refused
        row("ref\u202e1", payment_date=d),  # a bidi control: refused
        row("  ref-e\u0301 ", payment_date=d),  # valid: recorded trimmed and composed
        row("ünï€😀", payment_date=d),
        row("ACC", loan_account_number=" ", payment_date=d),
        row("ACC2", loan_account_number="LA\n1", payment_date=d),
        row("CIF", cif="", payment_date=d),
        row("CIF2", cif="C\x1f", payment_date=d),
        row("CIF3", cif="", loan_account_number="", payment_date=d),  # first field wins
        row("AMT0", amount=Decimal("0"), payment_date=d),
        row("AMTNEG", amount=Decimal("-0.01"), payment_date=d),
        row("AMTMIN", amount=Decimal("0.01"), payment_date=d),
        row("AMTMAX", amount=AMOUNT_MAX, payment_date=d),
        row("AMTNAN", amount=Decimal("NaN"), payment_date=d),
        row("AMTBAD", amount=Decimal("0"), cif="", payment_date=d),  # cif before amount
        row("EARLIEST", payment_date=WINDOW.earliest),
        row("TOO-OLD", payment_date=WINDOW.earliest - micro),
        row("LATEST", payment_date=WINDOW.latest),
        row("TOO-NEW", payment_date=WINDOW.latest + micro),
        row("OLD-AND-ZERO", payment_date=datetime(2000, 1, 1), amount=Decimal("0")),
        row("CH-EMPTY", payment_channel="", payment_date=d),
        row("CH-NULL", payment_channel=None, payment_date=d),
        row("CH-CTRL", payment_channel="x\x00y".replace("\x00", "\x02"), payment_date=d),
        row("CH-SPACE", payment_channel="   ", payment_date=d),
        row("MD-OBJ", metadata={"a": [1, 2.5, None]}, payment_date=d),
        row("MD-EMPTY", metadata={}, payment_date=d),
        row("MD-LIST", metadata=[1, 2], payment_date=d),
        row("MD-STR", metadata="text", payment_date=d),
        row("MD-INT", metadata=42, payment_date=d),
        row("MD-NEGINT", metadata=-7, payment_date=d),
        row("MD-FLOAT", metadata=1.5, payment_date=d),
        row("MD-BOOL", metadata=True, payment_date=d),
        row("MD-STR-OBJ", metadata='{"k": 1}', payment_date=d),  # decoded again: an object
        row("MD-STR-STR", metadata='"inner"', payment_date=d),
        row("MD-STR-NULL", metadata="null", payment_date=d),
        row("MD-CTRL-CH", metadata=[1], payment_channel="\x03", payment_date=d),
    ]
    ids = await load(db, cases)
    ids.append(await db.fetchval(  # a JSON null (not SQL NULL) is "no metadata"
        "INSERT INTO payment_service.payment_staging (reference_number, loan_account_number,"
        " cif, amount, payment_date, metadata) VALUES ('MD-JSON-NULL', 'LA', 'C', 1,"
        " $1, 'null'::jsonb) RETURNING id",
        d,
    ))  # fmt: skip
    for inf in ("infinity", "-infinity"):
        ids.append(await db.fetchval(
            "INSERT INTO payment_service.payment_staging (reference_number,"
            " loan_account_number, cif, amount, payment_date) VALUES ($1, 'LA', 'C', 1,"
            " $2::text::timestamp) RETURNING id",
            f"DATE-{inf}", inf,
        ))  # fmt: skip

    sql = await sql_verdicts(db, ids, WINDOW)
    rows = await db.fetch(
        "SELECT id, reference_number, loan_account_number, cif, amount, payment_date,"
        " payment_channel, metadata FROM payment_service.payment_staging"
        " WHERE id = ANY($1::bigint[])",
        ids,
    )
    python = {r["id"]: python_verdict(r, WINDOW) for r in rows}
    assert sql == python
    # The cases do exercise every kind of verdict, not just agreement on "valid".
    fields = {v.split(":")[0] for v in python.values() if v}
    assert fields == {
        "reference_number", "loan_account_number", "cif", "amount", "payment_date",
        "payment_channel", "metadata",
    }  # fmt: skip
    assert sum(v is None for v in python.values()) >= 10


async def test_recorded_hashes_and_events_match_the_python_builders(
    db: asyncpg.Pool, stack: Any
) -> None:
    settings = make_settings(stack)
    window = date_window(NOW, settings.partition_retention_months, 1)
    assert window.earliest < DAY
    tricky = [
        row("P-PLAIN"),
        row("P-UNICODE-ünï€😀", loan_account_number="LÄ-€", cif="ÇIF-😀"),
        row("P-CENT", amount=Decimal("0.01"), payment_date=DAY + timedelta(microseconds=1)),
        row("P-TENTHS", amount=Decimal("0.10"), payment_date=DAY + timedelta(microseconds=999999)),
        row("P-WHOLE", amount=Decimal("100"), payment_date=DAY.replace(hour=0)),
        row("P-MAX", amount=AMOUNT_MAX, payment_channel=None),
        row("P-QUOTES", loan_account_number="L\"\\'", cif="c'\"\\", payment_channel='"ch"\\'),
        row("P-META", metadata={"nested": {"list": [1, 2.5, "x", None, True]}, "é": "😀"}),
        row("P-META-EMPTY", metadata={}),
        row("P-ZW", payment_channel="\u3000branch\u3000"),
        # Recorded under the one rule for references: trimmed, composed (NFC).
        row("\u3000 P-TRIM-e\u0301\u00a0", payment_channel="x"),
    ]
    ids = await load(db, tricky)

    await StagingWorker(db, settings, Wakeup()).burst()

    staged = {
        r["id"]: r
        for r in await db.fetch(
            "SELECT * FROM payment_service.payment_staging WHERE id = ANY($1::bigint[])", ids
        )
    }
    assert {r["result"] for r in staged.values()} == {"recorded"}
    for i in ids:
        s = staged[i]
        ref = normalize_reference(s["reference_number"])
        stored = await db.fetchrow(
            "SELECT r.payload_hash, o.payload, o.event_id, o.event_type, o.key FROM"
            f" payment_service.payment_references r JOIN {QUEUED} o"
            " ON o.key = r.reference_number WHERE r.reference_number = $1",
            ref,
        )
        assert stored is not None, ref
        assert stored["payload_hash"].hex() == business_hash(
            ref, s["loan_account_number"], s["cif"], s["amount"], s["payment_date"]
        ), ref
        expected = payment_recorded(
            payment_id=s["payment_id"],
            reference_number=ref,
            loan_account_number=s["loan_account_number"],
            cif=s["cif"],
            amount=s["amount"],
            payment_date=s["payment_date"],
            payment_channel=s["payment_channel"],
            source="staging",
            metadata=s["metadata"],
            status="succeeded",
        )
        assert_same_recorded_event(stored, expected)


async def test_hash_sql_matches_business_hash_over_tricky_values(db: asyncpg.Pool) -> None:
    hashed = staging_sql.business_hash_sql(
        "$1::text", "$2::text", "$3::text", "$4::numeric(15,2)", "$5::timestamp"
    )
    values = [
        ("R", "A", "C", Decimal("0.01"), datetime(2024, 1, 2, 3, 4, 5)),
        ("R", "A", "C", Decimal("10.50"), datetime(2024, 1, 2, 3, 4, 5, 7)),
        ("ünï€😀", "Ä", "😀", Decimal("1"), datetime(999, 12, 31, 23, 59, 59, 999999)),
        ("x\x1fy", "", "\\", AMOUNT_MAX, datetime(9999, 12, 31)),
        ("R", "A", "C", Decimal("-5"), datetime(2024, 2, 29, 0, 0, 0, 100000)),
    ]
    for v in values:
        amount = v[3].quantize(Decimal("0.01"))
        assert await db.fetchval(f"SELECT {hashed}", *v) == business_hash(
            v[0], v[1], v[2], amount, v[4]
        ), v
