"""Validation rules for webhook bodies and staging rows, one table per field,
plus properties: float amounts keep their written value, and no input at all
makes validation raise anything but a 422."""

from __future__ import annotations

import types
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.domain.model import AMOUNT_MAX, STATUSES, Payment
from gateway.domain.references import forbidden, normalize_reference
from gateway.domain.validation import (
    DateWindow,
    date_window,
    parse_amount,
    parse_event_time,
    parse_timestamp,
    validate_payment,
)
from gateway.errors import ValidationError
from tests.oracles import validate_staging_row

NOW = datetime(2026, 3, 15, 12, 0, 0)
WINDOW = date_window(NOW, 12, 31)  # 2025-03-01 00:00 .. 2026-04-15 12:00
SECRETISH = "Z9" * 30  # a long marker that must never come back in an error detail

FIELDS = {
    "body",
    "reference_number",
    "loan_account_number",
    "cif",
    "amount",
    "payment_date",
    "payment_channel",
    "metadata",
    "status",
    "event_time",
}


def valid_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "reference_number": "REF-0001",
        "loan_account_number": "LN00012345",
        "cif": "CIF0001",
        "amount": "1500.00",
        "payment_date": "2026-03-01T10:30:00Z",
        "payment_channel": "bank_transfer",
        "metadata": {"branch": "001"},
    }
    for key, value in changes.items():
        if value is DROP:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


DROP = object()


def reject(field: str, value: object, fn: Any = None) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        if fn is None:
            validate_payment(valid_doc(**{field: value}), window=WINDOW)
        else:
            fn(value)
    err = info.value
    assert err.status == 422
    assert err.body()["field"] == err.field
    assert SECRETISH not in err.detail and len(err.detail) <= 80
    return err


# -- date window ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "months", "days", "earliest", "latest"),
    [
        (NOW, 12, 31, datetime(2025, 3, 1), datetime(2026, 4, 15, 12)),
        (datetime(2026, 1, 31, 23, 59), 1, 0, datetime(2025, 12, 1), datetime(2026, 1, 31, 23, 59)),
        (datetime(2026, 1, 1), 12, 1, datetime(2025, 1, 1), datetime(2026, 1, 2)),
        (datetime(2026, 12, 31), 25, 0, datetime(2024, 11, 1), datetime(2026, 12, 31)),
        (datetime(2026, 3, 15), 0, 0, datetime(2026, 3, 1), datetime(2026, 3, 15)),
        # Aware: 02:00+05:00 on March 1st is still February 28th in UTC.
        (
            datetime(2026, 3, 1, 2, 0, tzinfo=timezone(timedelta(hours=5))),
            1,
            0,
            datetime(2026, 1, 1),
            datetime(2026, 2, 28, 21, 0),
        ),
        (datetime(2026, 3, 1, tzinfo=UTC), 1, 0, datetime(2026, 2, 1), datetime(2026, 3, 1)),
    ],
)
def test_date_window(
    now: datetime, months: int, days: int, earliest: datetime, latest: datetime
) -> None:
    window = date_window(now, months, days)
    assert window == DateWindow(earliest=earliest, latest=latest)
    assert window.earliest.tzinfo is None and window.latest.tzinfo is None


# -- amount ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10", "10.00"),
        ("10.5", "10.50"),
        ("10.500", "10.50"),
        (".5", "0.50"),
        ("007.10", "7.10"),
        ("0.01", "0.01"),
        ("9999999999999.99", "9999999999999.99"),
        (1, "1.00"),
        (9999999999999, "9999999999999.00"),
        (10.5, "10.50"),
        (0.1, "0.10"),
        (1234.56, "1234.56"),
        (100.0, "100.00"),
        (1e2, "100.00"),
        (0.07, "0.07"),
        (9999999999999.99, "9999999999999.99"),
        (Decimal("5.1"), "5.10"),
        (Decimal("1E+2"), "100.00"),
        (Decimal("12.3400"), "12.34"),
    ],
)
def test_amount_accepted(value: object, expected: str) -> None:
    amount = parse_amount(value)
    assert amount == Decimal(expected)
    assert str(amount) == expected  # quantized to exactly 2 places


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("1e5", "plain decimal"),
        (" 1", "plain decimal"),
        ("1 ", "plain decimal"),
        ("+1", "plain decimal"),
        ("0x10", "plain decimal"),
        ("NaN", "plain decimal"),
        ("Infinity", "plain decimal"),
        ("-Infinity", "plain decimal"),
        ("", "plain decimal"),
        ("1.", "plain decimal"),
        (".", "plain decimal"),
        ("1,00", "plain decimal"),
        ("1_000", "plain decimal"),
        ("\u0661\u0662", "plain decimal"),  # Arabic-Indic digits, which Decimal() accepts
        ("1" * 41, "too many"),
        ("-1", "greater than zero"),
        ("-0", "greater than zero"),
        ("0", "greater than zero"),
        ("0.00", "greater than zero"),
        ("10.505", "2 decimal places"),
        ("0.001", "2 decimal places"),
        ("10000000000000.00", "maximum"),
        ("10000000000000", "maximum"),
        (True, "not bool"),
        (False, "not bool"),
        (None, "required"),
        ([], "not list"),
        ({}, "not dict"),
        (0, "greater than zero"),
        (-5, "greater than zero"),
        (10**13, "maximum"),
        pytest.param(10**5000, "maximum", id="huge-int"),
        pytest.param(-(10**5000), "greater than zero", id="huge-negative-int"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (float("-inf"), "finite"),
        (0.0, "greater than zero"),
        (-0.0, "greater than zero"),
        (-1.5, "greater than zero"),
        (10.505, "2 decimal places"),
        (0.1 + 0.2, "2 decimal places"),  # 0.30000000000000004
        (1e16, "maximum"),
        (1e-300, "2 decimal places"),
        (Decimal("NaN"), "finite"),
        (Decimal("sNaN"), "finite"),
        (Decimal("Infinity"), "finite"),
        (Decimal("-1"), "greater than zero"),
        (Decimal("0.001"), "2 decimal places"),
        (Decimal("1E+13"), "maximum"),
    ],
)
def test_amount_rejected(value: object, detail: str) -> None:
    err = reject("amount", value)
    assert err.field == "amount"
    assert detail in err.detail


def test_amount_error_names_the_given_field() -> None:
    with pytest.raises(ValidationError) as info:
        parse_amount("abc", "statement_amount")
    assert info.value.field == "statement_amount"


# -- timestamps -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-24", datetime(2026, 11, 24)),
        ("2026-11-24T10:00:00Z", datetime(2026, 11, 24, 10)),
        ("2026-11-24T10:00:00+02:00", datetime(2026, 11, 24, 8)),
        ("2026-11-24T01:00:00+05:30", datetime(2026, 11, 23, 19, 30)),
        ("2026-11-24T22:00:00-03:00", datetime(2026, 11, 25, 1)),
        ("2026-11-24T10:00:00", datetime(2026, 11, 24, 10)),
        ("2026-11-24 10:00:00.123456", datetime(2026, 11, 24, 10, 0, 0, 123456)),
        ("2026-11-24T10:00:00.5Z", datetime(2026, 11, 24, 10, 0, 0, 500000)),
    ],
)
def test_timestamp_accepted(value: str, expected: datetime) -> None:
    parsed = parse_timestamp(value, "payment_date")
    assert parsed == expected
    assert parsed.tzinfo is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not a date",
        "2026-13-01",
        "2026-02-30",
        "24/11/2026",
        " 2026-11-24",
        "2026-11-24T25:00:00",
        "9999-12-31T23:59:59-01:00",  # valid ISO, but past datetime.max in UTC
        "0001-01-01T00:00:00+01:00",
        "2026-11-24T10:00:00Z" + "0" * 60,
        SECRETISH,
        1764000000,
        1764000000.5,
        True,
        None,
        [],
        {"date": "2026-11-24"},
    ],
)
def test_payment_date_rejected(value: object) -> None:
    err = reject("payment_date", value)
    assert err.field == "payment_date"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (1764000000, datetime(2025, 11, 24, 16)),
        (1764000000.25, datetime(2025, 11, 24, 16, 0, 0, 250000)),
        ("2025-11-24T16:00:00Z", datetime(2025, 11, 24, 16)),
        ("2025-11-24T18:00:00+02:00", datetime(2025, 11, 24, 16)),
    ],
)
def test_event_time_accepted(value: object, expected: datetime | None) -> None:
    assert parse_event_time(value) == expected
    payment = validate_payment(valid_doc(event_time=value), window=WINDOW)
    assert payment.provider_event_at == expected


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (True, "not bool"),
        ("yesterday", "ISO 8601"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (10**30, "out of range"),
        (1764000000000, "out of range"),  # milliseconds, not seconds
        ([], "not list"),
        ("2099-01-01T00:00:00Z", "future"),  # would make every later event stale
    ],
)
def test_event_time_rejected(value: object, detail: str) -> None:
    err = reject("event_time", value)
    assert err.field == "event_time"
    assert detail in err.detail


def test_payment_date_window_edges_are_inclusive() -> None:
    def at(when: datetime) -> Payment:
        return validate_payment(valid_doc(payment_date=when.isoformat()), window=WINDOW)

    assert at(WINDOW.earliest).payment_date == WINDOW.earliest
    assert at(WINDOW.latest).payment_date == WINDOW.latest
    too_old = reject("payment_date", (WINDOW.earliest - timedelta(microseconds=1)).isoformat())
    assert "too old" in too_old.detail
    too_new = reject("payment_date", (WINDOW.latest + timedelta(microseconds=1)).isoformat())
    assert "future" in too_new.detail
    # The window applies to the provider's own calendar day, not to the UTC one: 1 March
    # 00:30 at +01:00 is 28 February in UTC, and it is accepted as sent.
    first = validate_payment(valid_doc(payment_date="2025-03-01T00:30:00+01:00"), window=WINDOW)
    assert first.payment_date == datetime(2025, 3, 1, 0, 30)
    assert first.payment_at == datetime(2025, 2, 28, 23, 30)
    assert "too old" in reject("payment_date", "2025-02-28T23:30:00-01:00").detail


# -- whole documents ------------------------------------------------------------


def test_valid_document_becomes_a_payment() -> None:
    metadata = {"branch": "001", "nested": [1, {"x": None}]}
    doc = valid_doc(
        reference_number=" REF 7 ",
        metadata=metadata,
        status="pending",
        event_time="2026-03-01T10:31:00Z",
        unknown_key={"ignored": True},
    )
    payment = validate_payment(doc, window=WINDOW)
    assert payment == Payment(
        reference_number="REF 7",  # trimmed: gateway.domain.references
        loan_account_number="LN00012345",
        cif="CIF0001",
        amount=Decimal("1500.00"),
        payment_date=datetime(2026, 3, 1, 10, 30),
        payment_channel="bank_transfer",
        status="pending",
        provider_event_at=datetime(2026, 3, 1, 10, 31),
        payment_at=datetime(2026, 3, 1, 10, 30),  # sent with a zone (Z)
    )
    assert payment.metadata is metadata


def test_minimal_document_defaults() -> None:
    doc = valid_doc(payment_channel=DROP, metadata=DROP, amount=250, payment_date="2026-03-01")
    payment = validate_payment(doc, window=WINDOW)
    assert payment.payment_channel is None
    assert payment.metadata is None
    assert payment.status == "succeeded"
    assert payment.provider_event_at is None
    assert payment.amount == Decimal("250.00")
    assert payment.payment_date == datetime(2026, 3, 1)


def test_nulls_for_optional_fields_are_defaults() -> None:
    doc = valid_doc(payment_channel=None, metadata=None, status=None, event_time=None)
    payment = validate_payment(doc, window=WINDOW)
    assert (payment.payment_channel, payment.metadata, payment.status) == (None, None, "succeeded")


@pytest.mark.parametrize("status", STATUSES)
def test_every_known_status_is_accepted(status: str) -> None:
    assert validate_payment(valid_doc(status=status), window=WINDOW).status == status


def test_maximum_lengths_are_accepted() -> None:
    doc = valid_doc(
        reference_number="r" * 255,
        loan_account_number="a" * 500,
        cif="c" * 500,
        payment_channel="p" * 100,
    )
    payment = validate_payment(doc, window=WINDOW)
    assert len(payment.reference_number) == 255
    # Length is in characters, as VARCHAR(n) counts them, not bytes.
    assert validate_payment(valid_doc(cif="é" * 20), window=WINDOW).cif == "é" * 20


def test_metadata_text_that_merely_looks_like_an_escape_is_fine() -> None:
    payment = validate_payment(valid_doc(metadata={"note": "\\u0000"}), window=WINDOW)
    assert payment.metadata == {"note": "\\u0000"}


def deep(levels: int) -> Any:
    value: Any = "leaf"
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("field", "value", "detail"),
    [
        ("reference_number", DROP, "required"),
        ("reference_number", None, "required"),
        ("reference_number", "", "empty"),
        ("reference_number", "   ", "empty"),
        ("reference_number", "\t\n", "empty"),
        ("reference_number", "r" * 256, "longer than 255"),
        ("reference_number", SECRETISH * 10, "longer than 255"),
        ("reference_number", "a\x00b", "control"),
        ("reference_number", "a\nb", "control"),
        ("reference_number", "a\tb", "control"),
        ("reference_number", "a\x7fb", "control"),
        ("reference_number", "a\x85b", "control"),
        ("reference_number", "a\ud800b", "invalid"),
        ("reference_number", 12345, "not int"),
        ("reference_number", True, "not bool"),
        ("reference_number", ["REF"], "not list"),
        ("loan_account_number", DROP, "required"),
        ("loan_account_number", "", "empty"),
        ("loan_account_number", "a" * 501, "longer than 500"),
        ("loan_account_number", 123, "not int"),
        ("loan_account_number", False, "not bool"),
        ("loan_account_number", "LN\x001", "control"),
        ("cif", DROP, "required"),
        ("cif", " ", "empty"),
        ("cif", "c" * 501, "longer than 500"),
        ("cif", 42, "not int"),
        ("cif", 4.2, "not float"),
        ("cif", {"id": 1}, "not dict"),
        ("payment_channel", "p" * 101, "longer than 100"),
        ("payment_channel", 5, "not int"),
        ("payment_channel", True, "not bool"),
        ("payment_channel", "web\x00", "control"),
        ("amount", DROP, "required"),
        ("payment_date", DROP, "required"),
        ("payment_date", "1999-01-01", "too old"),
        ("payment_date", "2030-01-01T00:00:00Z", "future"),
        ("metadata", [], "not list"),
        ("metadata", "x", "not str"),
        ("metadata", 1, "not int"),
        ("metadata", True, "not bool"),
        ("metadata", {"a": "nul\x00inside"}, "NUL"),
        ("metadata", {"nul\x00key": 1}, "NUL"),
        ("metadata", {"a": [{"b": "\\\\\x00"}]}, "NUL"),
        ("metadata", {"a": 2**64}, "storable"),
        ("metadata", {"a": "\ud800"}, "storable"),
        ("metadata", {1: "non-string key"}, "storable"),
        ("metadata", {"deep": deep(10_000)}, "storable"),
        ("status", "SUCCEEDED", "one of"),
        ("status", "completed", "one of"),
        ("status", SECRETISH, "one of"),
        ("status", "", "one of"),
        ("status", 1, "one of"),
        ("status", True, "one of"),
        ("status", ["pending"], "one of"),
    ],
)
def test_invalid_field(field: str, value: object, detail: str) -> None:
    err = reject(field, value)
    assert err.field == field
    assert detail in err.detail


@pytest.mark.parametrize("doc", [None, [], "text", 1, 1.5, True, deep(10_000)])
def test_body_must_be_an_object(doc: object) -> None:
    err = reject("body", doc, lambda d: validate_payment(d, window=WINDOW))
    assert err.field == "body"
    assert "JSON object" in err.detail


def test_first_failing_field_in_reading_order_is_reported() -> None:
    with pytest.raises(ValidationError) as info:
        validate_payment({"amount": "x", "cif": 1}, window=WINDOW)
    assert info.value.field == "reference_number"


# -- staging rows ---------------------------------------------------------------


def staging_row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": 7,
        "reference_number": "STG-1",
        "loan_account_number": "LN1",
        "cif": "CIF1",
        "amount": Decimal("99.90"),
        "payment_date": datetime(2026, 2, 1, 8, 0),
        "payment_channel": None,
        "metadata": None,
        "processed": False,
    }
    row.update(changes)
    return row


def test_staging_row_becomes_a_payment() -> None:
    payment = validate_staging_row(
        types.MappingProxyType(staging_row(metadata='{"batch": "b1"}')), window=WINDOW
    )
    assert payment == Payment(
        reference_number="STG-1",
        loan_account_number="LN1",
        cif="CIF1",
        amount=Decimal("99.90"),
        payment_date=datetime(2026, 2, 1, 8, 0),
    )
    assert payment.metadata == {"batch": "b1"}
    assert payment.status == "succeeded"


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [(None, None), ({"a": 1}, {"a": 1}), ("null", None), (b'{"a": 1}', {"a": 1})],
)
def test_staging_metadata_forms(metadata: object, expected: object) -> None:
    assert validate_staging_row(staging_row(metadata=metadata), window=WINDOW).metadata == expected


def test_staging_aware_date_is_converted_to_utc() -> None:
    aware = datetime(2026, 2, 1, 8, 0, tzinfo=timezone(timedelta(hours=-5)))
    payment = validate_staging_row(staging_row(payment_date=aware), window=WINDOW)
    assert payment.payment_date == datetime(2026, 2, 1, 13, 0)


@pytest.mark.parametrize(
    ("field", "value", "detail"),
    [
        ("amount", Decimal("0.00"), "greater than zero"),
        ("amount", Decimal("-10.00"), "greater than zero"),
        ("amount", None, "required"),
        ("payment_date", datetime(2020, 1, 1), "too old"),
        ("payment_date", datetime(2030, 1, 1), "future"),
        ("payment_date", None, "required"),
        ("reference_number", "r" * 256, "longer than 255"),
        ("reference_number", "  ", "empty"),
        ("loan_account_number", "a" * 501, "longer than 500"),
        ("cif", None, "required"),
        ("payment_channel", "p" * 101, "longer than 100"),
        ("metadata", "{not json", "not valid JSON"),
        ("metadata", "[1, 2]", "not list"),
        ("metadata", '"text"', "not str"),
        ("metadata", '{"a": "\\u0000"}', "NUL"),
    ],
)
def test_staging_row_rejected_by_the_same_rules(field: str, value: object, detail: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_staging_row(staging_row(**{field: value}), window=WINDOW)
    assert info.value.field == field
    assert detail in info.value.detail


# -- properties -----------------------------------------------------------------


@given(st.integers(min_value=1, max_value=999_999_999_999_999))
def test_json_number_amounts_keep_the_written_value(cents: int) -> None:
    text = f"{cents // 100}.{cents % 100:02d}"
    value = orjson.loads(text)
    assert isinstance(value, float)
    assert parse_amount(value) == Decimal(text) == Decimal(repr(value))


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_any_float_parses_to_its_shortest_repr_or_is_rejected(value: float) -> None:
    assert orjson.loads(orjson.dumps(value)) == value  # orjson could have produced it
    exact = Decimal(repr(value))
    if 0 < exact <= AMOUNT_MAX and exact == exact.quantize(Decimal("0.01")):
        assert parse_amount(value) == exact
    else:
        with pytest.raises(ValidationError):
            parse_amount(value)


# Up to 4000 digits: beyond 4300 even repr() of the failing example would raise.
huge_ints = st.builds(
    lambda digits, sign: sign * (10**digits + 7),
    st.integers(min_value=18, max_value=4000),
    st.sampled_from([1, -1]),
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | huge_ints
    | st.floats()
    | st.text()
    | st.text(alphabet=st.characters(categories=["Cs", "Cc", "Zs", "L", "N", "P"]))
    | st.sampled_from(["", " ", "0", "1e5", "2026-03-01", "NaN", "pending", "\x00", "\ud800"])
)
json_like = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(sorted(FIELDS - {"body"}))


def assert_only_validation_errors(doc: object) -> None:
    try:
        result = validate_payment(doc, window=WINDOW)
    except ValidationError as err:
        assert err.field in FIELDS
        assert err.status == 422
        assert len(err.detail) <= 80
    else:
        assert isinstance(result, Payment)
        assert WINDOW.earliest <= result.payment_date <= WINDOW.latest
        assert Decimal("0.01") <= result.amount <= AMOUNT_MAX


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_like)
def test_arbitrary_json_only_raises_validation_error(doc: object) -> None:
    assert_only_validation_errors(doc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(field_names | st.text(max_size=8), json_like, max_size=10))
def test_arbitrary_objects_only_raise_validation_error(doc: dict[str, Any]) -> None:
    assert_only_validation_errors(doc)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(field_names, json_like, min_size=1, max_size=3))
def test_valid_document_with_arbitrary_fields_only_raises_validation_error(
    replacements: dict[str, Any],
) -> None:
    assert_only_validation_errors(valid_doc(**replacements))


@settings(max_examples=200, deadline=None)
@given(
    reference=st.text(min_size=1, max_size=255).filter(
        lambda s: not s.isspace() and not forbidden(s)
    ),
    cents=st.integers(min_value=1, max_value=999_999_999_999_999),
    offset=st.integers(
        min_value=0, max_value=int((WINDOW.latest - WINDOW.earliest).total_seconds())
    ),
)
def test_generated_valid_payments_round_trip(reference: str, cents: int, offset: int) -> None:
    when = WINDOW.earliest + timedelta(seconds=offset)
    amount = f"{cents // 100}.{cents % 100:02d}"
    doc = valid_doc(reference_number=reference, amount=amount, payment_date=when.isoformat())
    payment = validate_payment(orjson.loads(orjson.dumps(doc)), window=WINDOW)
    assert payment.reference_number == normalize_reference(reference)
    assert payment.amount == Decimal(amount)
    assert payment.payment_date == when
