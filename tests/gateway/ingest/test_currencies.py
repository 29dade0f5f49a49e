"""Each preset's currency table, currency by currency, through the preset's own mapping.

The expected tables below are written from each provider's page (the URL the preset
cites), independently of the preset files: a change to a preset's table fails here until
the page says so too. Every currency of every table goes through `Channel.extract` in
the provider's document shape and then through validation, so each one is recorded with
the amount the provider meant.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Settings
from gateway.domain.validation import date_window, validate_payment
from gateway.errors import ConfigError, ValidationError
from gateway.ingest.channels import Channel, load_channels, load_preset
from gateway.ingest.currencies import merge_tables
from tests.paypal_ca import pem, private_ca

CHANNELS = """
[channels.stripe]
preset = "stripe"
secrets = ["whsec_test"]
[channels.adyen]
preset = "adyen"
secrets = ["44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"]
[channels.checkout]
preset = "checkout"
secrets = ["k"]
[channels.square]
preset = "square"
secrets = ["k"]
[channels.square.verify]
notification_url = "https://pay.example.com/square"
[channels.razorpay]
preset = "razorpay"
secrets = ["k"]
[channels.paddle]
preset = "paddle"
secrets = ["pdl_ntfset_k"]
[channels.paypal]
preset = "paypal"
[channels.paypal.verify]
webhook_id = "WH-1"
"""


def codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


# (no decimals, three decimals, how many currencies in all): every other one has two.
DOCUMENTED: dict[str, tuple[frozenset[str], frozenset[str], int]] = {
    # https://docs.stripe.com/currencies: zero-decimal and three-decimal lists
    "stripe": (
        codes("BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF"),
        codes("BHD JOD KWD OMR TND"),
        139,
    ),
    # https://docs.adyen.com/development-resources/currency-codes/: CLP 2, CVE 0, IDR 0
    "adyen": (
        codes("CVE DJF GNF IDR JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF"),
        codes("BHD IQD JOD KWD LYD OMR TND"),
        140,
    ),
    # https://www.checkout.com/docs/payments/accept-payments/format-the-amount-value
    "checkout": (
        codes("BIF DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF"),
        codes("BHD IQD JOD KWD LYD OMR TND"),
        149,
    ),
    # https://developer.squareup.com/docs/build-basics/working-with-monetary-amounts
    "square": (codes("JPY"), frozenset(), 6),
    # https://razorpay.com/docs/payments/international-payments/#supported-currencies
    "razorpay": (
        codes("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF"),
        codes("BHD IQD JOD KWD OMR TND"),
        128,
    ),
    # https://developer.paddle.com/concepts/sell/supported-currencies
    "paddle": (codes("CLP JPY KRW VND"), frozenset(), 33),
    # https://developer.paypal.com/reference/currency-codes/ (decimal strings)
    "paypal": (codes("HUF JPY TWD"), frozenset(), 24),
}


def stripe_doc(amount: Any, currency: str) -> dict[str, Any]:
    return {
        "id": "evt_1",
        "type": "payment_intent.succeeded",
        "created": 1_764_000_000,
        "data": {
            "object": {
                "id": "pi_1",
                "amount": amount,
                "currency": currency.lower(),  # Stripe sends lower case
                "created": 1_764_000_000,
                "metadata": {"loan_account_number": "LA-1", "cif": "CIF-1"},
            }
        },
    }


def adyen_doc(amount: Any, currency: str) -> dict[str, Any]:
    return {
        "eventCode": "AUTHORISATION",
        "success": "true",
        "pspReference": "JDD6LKT8MBLZNN84",
        "merchantReference": "LA-1",
        "amount": {"value": amount, "currency": currency},
        "eventDate": "2025-11-24T10:00:00+01:00",
        "additionalData": {"shopperReference": "CIF-1"},
    }


def checkout_doc(amount: Any, currency: str) -> dict[str, Any]:
    return {
        "id": "evt_1",
        "type": "payment_captured",
        "created_on": "2025-11-24T10:00:00Z",
        "data": {
            "id": "pay_1",
            "amount": amount,
            "currency": currency,
            "reference": "LA-1",
            "customer": {"id": "cus_1"},
            "processed_on": "2025-11-24T10:00:00Z",
        },
    }


def square_doc(amount: Any, currency: str) -> dict[str, Any]:
    payment = {
        "id": "KkAkhdMsgzn59SM8A89WgKwekxLZY",
        "status": "COMPLETED",
        "amount_money": {"amount": amount, "currency": currency},
        "reference_id": "LA-1",
        "customer_id": "CIF-1",
        "created_at": "2025-11-24T10:00:00.123Z",
        "updated_at": "2025-11-24T10:00:01.456Z",
    }
    return {"type": "payment.updated", "event_id": "e-1", "data": {"object": {"payment": payment}}}


def razorpay_doc(amount: Any, currency: str) -> dict[str, Any]:
    entity = {
        "id": "pay_29QQoUBi66xm2f",
        "amount": amount,
        "currency": currency,
        "notes": {"loan_account_number": "LA-1", "cif": "CIF-1"},
        "created_at": 1_764_000_000,
    }
    return {"event": "payment.captured", "payload": {"payment": {"entity": entity}}}


def paddle_doc(amount: Any, currency: str) -> dict[str, Any]:
    return {
        "event_id": "evt_1",
        "event_type": "transaction.completed",
        "occurred_at": "2025-11-24T10:00:00.123456Z",
        "data": {
            "id": "txn_1",
            "currency_code": currency,
            "custom_data": {"loan_account_number": "LA-1", "cif": "CIF-1"},
            "billed_at": "2025-11-24T10:00:00.123456Z",
            "details": {"totals": {"grand_total": str(amount)}},  # Paddle sends strings
        },
    }


def paypal_doc(amount: Any, currency: str) -> dict[str, Any]:
    return {
        "id": "WH-1",
        "event_type": "PAYMENT.CAPTURE.COMPLETED",
        "create_time": "2025-11-24T10:00:00Z",
        "resource": {
            "id": "7TK53561YB803214S",
            "amount": {"currency_code": currency, "value": amount},
            "invoice_id": "LA-1",
            "custom_id": "CIF-1",
            "create_time": "2025-11-24T10:00:00Z",
        },
    }


DOCS: dict[str, Callable[[Any, str], dict[str, Any]]] = {
    "stripe": stripe_doc,
    "adyen": adyen_doc,
    "checkout": checkout_doc,
    "square": square_doc,
    "razorpay": razorpay_doc,
    "paddle": paddle_doc,
    "paypal": paypal_doc,
}
WINDOW = date_window(datetime(2025, 12, 1), 24, 31)


@pytest.fixture(scope="module")
def channels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Channel]:
    path = tmp_path_factory.mktemp("currencies") / "channels.toml"
    path.write_text(paypal_trusting(CHANNELS, path.parent))
    registry = load_channels(Settings.from_env({}, channels_file=str(path)))
    return {name: registry.get(name) for name in DOCS}  # type: ignore[misc]


def paypal_trusting(text: str, folder: Path) -> str:
    """The channels with PayPal's certificates checked against a test CA (no system store)."""
    (folder / "ca.pem").write_bytes(pem(private_ca().root))
    trusted = f'webhook_id = "WH-1"\nca_file = "{folder}/ca.pem"\n'
    return text.replace('webhook_id = "WH-1"\n', trusted)


def table(provider: str) -> dict[str, int]:
    raw = load_preset(provider)["minor_units"]
    return {code: int(exp) for exp, listed in raw.items() for code in listed}


@pytest.mark.parametrize("provider", sorted(DOCUMENTED))
def test_each_preset_table_is_its_providers_page(provider: str) -> None:
    zero, three, size = DOCUMENTED[provider]
    exponents = table(provider)
    assert {c for c, e in exponents.items() if e == 0} == zero
    assert {c for c, e in exponents.items() if e == 3} == three
    assert set(exponents.values()) <= {0, 2, 3}
    assert len(exponents) == size


EVERY_CURRENCY = [(p, c) for p in sorted(DOCUMENTED) for c in sorted(table(p))]


@pytest.mark.parametrize(("provider", "currency"), EVERY_CURRENCY)
def test_every_currency_is_recorded_as_the_provider_meant(
    channels: dict[str, Channel], provider: str, currency: str
) -> None:
    channel, exponent = channels[provider], table(provider)[currency]
    if provider == "paypal":  # major units as a decimal string
        sent: Any = "1500" if exponent == 0 else "1500.25"
        meant = Decimal(sent)
    else:
        sent = 150025 if exponent else 150000
        meant = Decimal(sent).scaleb(-exponent)
    fields = channel.extract(DOCS[provider](sent, currency))
    assert fields["currency"] == currency
    assert Decimal(str(fields["amount"])) == meant  # PayPal's string is parsed later
    code, places = channel.money_of(fields)
    assert (code, places) == (currency, exponent)
    payment = validate_payment(fields, window=WINDOW, currency=code, places=places)
    assert (payment.amount, payment.currency) == (meant, currency)  # exact: nothing rounded


@pytest.mark.parametrize("provider", sorted(DOCUMENTED))
def test_a_currency_the_table_lacks_is_refused_by_name(
    channels: dict[str, Channel], provider: str
) -> None:
    amount = "12.00" if provider == "paypal" else 1200
    with pytest.raises(ValidationError) as info:
        channels[provider].extract(DOCS[provider](amount, "XTS"))  # ISO's testing code
    assert "unknown currency XTS" in info.value.detail
    assert info.value.field == channels[provider].currency_path


@pytest.mark.parametrize("bad", ["US", "US$", "usdx", 840, "", "€€€"])
def test_a_malformed_currency_is_refused_without_being_echoed(
    channels: dict[str, Channel], bad: Any
) -> None:
    with pytest.raises(ValidationError) as info:
        channels["adyen"].extract(adyen_doc(1200, bad))
    assert info.value.detail == "expected a 3-letter ISO 4217 currency code"


def test_the_issue_cases_clp_at_adyen_and_isk_at_checkout(channels: dict[str, Channel]) -> None:
    assert channels["adyen"].extract(adyen_doc(150000, "CLP"))["amount"] == Decimal("1500.00")
    assert channels["checkout"].extract(checkout_doc(5000, "ISK"))["amount"] == Decimal("5000")
    # The same integers mean something else at other providers, as their pages say.
    assert channels["stripe"].extract(stripe_doc(150000, "CLP"))["amount"] == Decimal("150000")
    assert channels["stripe"].extract(stripe_doc(5000, "ISK"))["amount"] == Decimal("50.00")


def test_a_decimal_amount_in_a_zero_decimal_currency_is_refused(
    channels: dict[str, Channel],
) -> None:
    fields = channels["paypal"].extract(paypal_doc("1500.50", "JPY"))
    code, places = channels["paypal"].money_of(fields)
    with pytest.raises(ValidationError) as info:
        validate_payment(fields, window=WINDOW, currency=code, places=places)
    assert info.value.detail == "has more than 0 decimal places for JPY"


def test_a_channel_moves_single_currencies_over_its_presets_table(tmp_path: Path) -> None:
    path = tmp_path / "channels.toml"
    path.write_text(
        paypal_trusting(CHANNELS, tmp_path)
        + '[channels.checkout.minor_units]\n2 = ["CLP"]\n0 = ["HUF"]\n'
    )
    checkout = load_channels(Settings.from_env({}, channels_file=str(path))).get("checkout")
    assert checkout is not None and checkout.minor_units is not None
    assert checkout.minor_units.exponent("CLP") == 2  # added
    assert checkout.minor_units.exponent("HUF") == 0  # moved from 2
    assert checkout.minor_units.exponent("ISK") == 0  # the preset's, kept
    assert len(checkout.minor_units) == len(table("checkout")) + 1
    assert merge_tables({"2": ["USD"]}, {"0": ["USD"]}) == {"2": [], "0": ["USD"]}


def test_a_currency_listed_under_two_exponents_stops_start_up(tmp_path: Path) -> None:
    path = tmp_path / "channels.toml"
    path.write_text(
        '[channels.x]\ncurrency_path = "c"\n[channels.x.fields]\namount = "a"\n'
        '[channels.x.minor_units]\n2 = ["USD"]\n0 = ["USD"]\n'
    )
    with pytest.raises(ConfigError, match="USD is listed twice"):
        load_channels(Settings.from_env({}, channels_file=str(path)))
