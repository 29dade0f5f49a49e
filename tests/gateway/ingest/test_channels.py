"""Channel configuration (settings + TOML + presets) and provider document mapping."""

from __future__ import annotations

import base64
import ipaddress
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Settings
from gateway.domain.validation import date_window, validate_payment
from gateway.errors import ConfigError, ValidationError
from gateway.ingest.channels import Channel, load_channels, load_preset
from gateway.ingest.signatures import SignatureError, sign

NOW = 1_717_171_717  # 2024-05-31T16:08:37Z
STANDARD_SECRET = "whsec_" + base64.b64encode(b"generic-key-0123456789").decode()
STRIPE_OLD = "whsec_stripe_old_0001"
STRIPE_NEW = "whsec_stripe_new_0002"


def config(**overrides: Any) -> Settings:
    return Settings.from_env({}, **overrides)


def write(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "channels.toml"
    path.write_text(text)
    return config(channels_file=str(path))


STRIPE_TOML = f"""
[channels.stripe]
preset = "stripe"
secrets_env = "STRIPE_SECRETS"
allow_cidrs = ["3.18.12.63/32", "2600:1f16::/32"]
rate_per_second = 2.5

[channels.partner]
scheme = "standard"
secrets = ["{STANDARD_SECRET}"]
tolerance_seconds = 60
"""


def stripe_channel(tmp_path: Path) -> Channel:
    registry = load_channels(
        write(tmp_path, STRIPE_TOML), environ={"STRIPE_SECRETS": f"{STRIPE_NEW} {STRIPE_OLD}"}
    )
    channel = registry.get("stripe")
    assert channel is not None
    return channel


def payment_intent_event(
    event_type: str = "payment_intent.succeeded", amount: int = 1050, currency: str = "usd"
) -> dict[str, Any]:
    return {
        "id": "evt_3PMXq2LkdIwHu7ix0a1b2c3d",
        "object": "event",
        "api_version": "2024-04-10",
        "created": NOW,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": "req_9f8e7d6c5b4a", "idempotency_key": "ik-1"},
        "type": event_type,
        "data": {
            "object": {
                "id": "pi_3PMXq2LkdIwHu7ix1xYz",
                "object": "payment_intent",
                "amount": amount,
                "amount_received": amount,
                "currency": currency,
                "created": NOW - 5,
                "customer": "cus_Q1w2e3r4",
                "latest_charge": "ch_3PMXq2LkdIwHu7ix1AbC",
                "metadata": {"loan_account_number": "LN-0000123", "cif": "CIF987"},
                "status": "succeeded",
            }
        },
    }


def charge_refunded_event(amount: int = 1050, currency: str = "jpy") -> dict[str, Any]:
    return {
        "id": "evt_3PMXzzLkdIwHu7ix0refund",
        "object": "event",
        "created": NOW + 3600,
        "type": "charge.refunded",
        "data": {
            "object": {
                "id": "ch_3PMXq2LkdIwHu7ix1AbC",
                "object": "charge",
                "amount": amount,
                "amount_refunded": amount,
                "currency": currency,
                "created": NOW - 4,
                "payment_intent": "pi_3PMXq2LkdIwHu7ix1xYz",
                "refunded": True,
                "metadata": {"loan_account_number": "LN-0000123", "cif": "CIF987"},
            },
            "previous_attributes": {"amount_refunded": 0, "refunded": False},
        },
    }


# -- the generic channel ---------------------------------------------------------


def test_generic_channel_comes_from_settings() -> None:
    plain = base64.b64encode(b"second-key").decode()
    registry = load_channels(
        config(webhook_secret=(STANDARD_SECRET, plain), signature_tolerance_seconds=120)
    )
    generic = registry.get("generic")

    assert registry.names() == ["generic"]
    assert generic is not None
    assert generic.scheme == "standard"
    assert generic.keys == (b"generic-key-0123456789", b"second-key")
    assert generic.tolerance_seconds == 120
    assert generic.fields is None
    doc = {"reference_number": "R1", "status": "pending", "event_time": "2024-05-31T00:00:00Z"}
    assert generic.extract(doc) is doc
    headers = sign("standard", b"second-key", b"{}", now=NOW)
    assert generic.verify(headers, b"{}", now=NOW).delivery_id == "msg_test"


def test_generic_without_secrets_refuses_every_delivery() -> None:
    generic = load_channels(config()).get("generic")
    assert generic is not None
    headers = sign("standard", b"anything", b"{}", now=NOW)

    with pytest.raises(SignatureError) as info:
        generic.verify(headers, b"{}", now=NOW)
    assert info.value.reason == "no_secret_configured"


def test_generic_bad_secret_names_the_variable_not_the_value() -> None:
    with pytest.raises(ConfigError) as info:
        load_channels(config(webhook_secret=("whsec_@@@nope@@@",)))

    assert "WEBHOOK_SECRET" in str(info.value)
    assert "@@@nope@@@" not in str(info.value)


def test_generic_github_scheme_from_settings() -> None:
    generic = load_channels(config(webhook_scheme="github", webhook_secret=("plain",))).get(
        "generic"
    )
    assert generic is not None

    assert generic.keys == (b"plain",)
    generic.verify(sign("github", b"plain", b"{}", now=NOW), b"{}", now=NOW)


def test_file_may_redefine_generic(tmp_path: Path) -> None:
    path = tmp_path / "channels.toml"
    path.write_text('[channels.generic]\nscheme = "shopify"\nsecrets = ["shop-key"]\n')
    registry = load_channels(config(channels_file=str(path), webhook_secret=(STANDARD_SECRET,)))
    generic = registry.get("generic")

    assert generic is not None
    assert (generic.scheme, generic.keys) == ("shopify", (b"shop-key",))


def test_redefined_generic_without_secrets_keeps_webhook_secret(tmp_path: Path) -> None:
    path = tmp_path / "channels.toml"
    path.write_text("[channels.generic]\ntolerance_seconds = 30\n")
    generic = load_channels(config(channels_file=str(path), webhook_secret=(STANDARD_SECRET,))).get(
        "generic"
    )

    assert generic is not None
    assert generic.keys == (b"generic-key-0123456789",)
    assert generic.tolerance_seconds == 30


# -- loading a channels file -------------------------------------------------------


def test_channels_file_with_preset_and_secrets_env(tmp_path: Path) -> None:
    registry = load_channels(
        write(tmp_path, STRIPE_TOML), environ={"STRIPE_SECRETS": f"{STRIPE_NEW} {STRIPE_OLD}"}
    )
    stripe_ch = registry.get("stripe")
    partner = registry.get("partner")

    assert registry.names() == ["generic", "partner", "stripe"]
    assert registry.get("nope") is None
    assert stripe_ch is not None and partner is not None
    assert stripe_ch.scheme == "stripe"
    assert stripe_ch.keys == (STRIPE_NEW.encode(), STRIPE_OLD.encode())
    assert stripe_ch.tolerance_seconds == 300
    assert stripe_ch.allow_cidrs == (
        ipaddress.ip_network("3.18.12.63/32"),
        ipaddress.ip_network("2600:1f16::/32"),
    )
    assert (stripe_ch.rate_per_second, stripe_ch.burst) == (2.5, 3)
    assert stripe_ch.event_id_path == "id"
    assert stripe_ch.status_map["charge.refunded"] == "refunded"
    assert stripe_ch.status_api is not None and stripe_ch.status_api["token_env"] == (
        "STRIPE_API_KEY"
    )
    assert partner.scheme == "standard"
    assert partner.keys == (b"generic-key-0123456789",)
    assert partner.tolerance_seconds == 60
    assert partner.allow_cidrs == ()
    assert partner.rate_per_second is None and partner.burst is None


def test_rotated_stripe_secrets_both_verify_and_others_fail(tmp_path: Path) -> None:
    channel = stripe_channel(tmp_path)
    body = b'{"id": "evt_1"}'

    for secret in (STRIPE_OLD, STRIPE_NEW):
        headers = sign("stripe", secret.encode(), body, now=NOW)
        assert channel.verify(headers, body, now=NOW).timestamp == NOW
    with pytest.raises(SignatureError):
        channel.verify(sign("stripe", STANDARD_SECRET.encode(), body, now=NOW), body, now=NOW)


def test_a_channel_rejects_another_channels_signature(tmp_path: Path) -> None:
    registry = load_channels(
        write(
            tmp_path,
            STRIPE_TOML + '\n[channels.other]\nscheme = "standard"\nsecrets = ["b3RoZXI="]\n',
        ),
        environ={"STRIPE_SECRETS": STRIPE_NEW},
    )
    partner, other = registry.get("partner"), registry.get("other")
    assert partner is not None and other is not None
    headers = sign("standard", other.keys[0], b"{}", now=NOW)

    other.verify(headers, b"{}", now=NOW)
    with pytest.raises(SignatureError) as info:
        partner.verify(headers, b"{}", now=NOW)
    assert info.value.reason == "signature_mismatch"


def test_preset_tables_are_merged_and_scalars_overridden(tmp_path: Path) -> None:
    text = """
[channels.stripe]
preset = "stripe"
secrets = ["whsec_x"]
tolerance_seconds = 90
[channels.stripe.fields]
cif = "data.object.metadata.customer_cif"
[channels.stripe.status_map]
"payment_intent.canceled" = "pending"
"""
    channel = load_channels(write(tmp_path, text)).get("stripe")
    assert channel is not None and channel.fields is not None

    assert channel.tolerance_seconds == 90
    assert channel.fields["cif"] == "data.object.metadata.customer_cif"
    assert channel.fields["amount"] == "data.object.amount"
    assert channel.status_map["payment_intent.canceled"] == "pending"
    assert channel.status_map["payment_intent.succeeded"] == "succeeded"
    # The shipped preset is not changed by a channel's overrides.
    assert load_preset("stripe")["status_map"]["payment_intent.canceled"] == "failed"


def test_repr_hides_secrets(tmp_path: Path) -> None:
    channel = stripe_channel(tmp_path)
    shown = repr(channel) + str(channel)

    assert "stripe" in shown
    assert STRIPE_NEW not in shown and STRIPE_OLD not in shown
    assert repr(STRIPE_NEW.encode()) not in shown
    assert "keys" not in shown


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[channels.x]\nscheme = "hmac-md5"\n', "channels.x.scheme"),
        ('[channels.x]\nallow_cidrs = ["10.0.0.0/33"]\n', "channels.x.allow_cidrs"),
        ('[channels.x]\nallow_cidrs = "10.0.0.1, nope"\n', "channels.x.allow_cidrs"),
        (
            '[channels.x]\n[channels.x.fields]\nreference_number = "id"\n'
            '[channels.x.status_map]\n"a.b" = "done"\n',
            "channels.x.status_map.a.b",
        ),
        ('[channels.x]\nsecret = "oops"\n', "channels.x.secret"),
        ('[channels.X]\nscheme = "standard"\n', "channels.X"),
        ('[channels.x]\nsecrets_env = "MISSING_VAR"\n', "channels.x.secrets_env"),
        ('[channels.x]\nsecrets = ["a"]\nsecrets_env = "V"\n', "channels.x.secrets"),
        ('[channels.x]\nsecrets = ["whsec_%%bad%%"]\n', "channels.x.secrets"),
        ('[channels.x]\npreset = "nosuchprovider"\n', "channels.x.preset"),
        ('[channels.x]\npreset = "paypal"\n', "channels.x.verify.webhook_id"),
        (
            '[channels.x]\npreset = "square"\nsecrets = ["k"]\n',
            "channels.x.verify.notification_url",
        ),
        ('[channels.x]\n[channels.x.fields]\nreference = "id"\n', "channels.x.fields.reference"),
        (  # minor units in a named currency: the provider's table must say what they are
            '[channels.x]\namount_minor_units = true\ncurrency_path = "c"\n'
            '[channels.x.fields]\namount = "a"\n',
            "channels.x.minor_units",
        ),
        (
            '[channels.x]\ncurrency_path = "c"\n[channels.x.minor_units]\n2 = ["usd"]\n'
            '[channels.x.fields]\namount = "a"\n',
            "channels.x.minor_units.2",
        ),
        (
            '[channels.x]\ncurrency_path = "c"\n[channels.x.minor_units]\n4 = ["CLF"]\n'
            '[channels.x.fields]\namount = "a"\n',
            "channels.x.minor_units.4",
        ),
        (
            '[channels.x]\n[channels.x.minor_units]\n2 = ["USD"]\n'
            '[channels.x.fields]\namount = "a"\n',
            "channels.x.minor_units",
        ),
        ('[channels.x]\n[channels.x.fields]\namount = "a..b"\n', "channels.x.fields.amount"),
        (
            '[channels.x]\nevent_type_path = "type"\n[channels.x.fields]\namount = "a"\n',
            "channels.x.event_type_path",
        ),
        ("[channels.x]\namount_minor_units = true\n", "channels.x.amount_minor_units"),
        ("[channels.x]\ntolerance_seconds = 0\n", "channels.x.tolerance_seconds"),
        ("[channels.x]\nburst = 10\n", "channels.x.burst"),
        ("[channels.x]\nrate_per_second = -1\n", "channels.x.rate_per_second"),
        (
            '[channels.x]\n[channels.x.fields]\namount = "a"\n'
            '[channels.x.constants]\namount = "1"\n',
            "channels.x.constants.amount",
        ),
        ("[other]\nx = 1\n", "other"),
        ("[channels\nbroken", "invalid TOML"),
    ],
)
def test_config_errors_name_the_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    settings = write(tmp_path, text)

    with pytest.raises(ConfigError) as info:
        load_channels(settings, environ={"V": "x"})

    message = str(info.value)
    assert str(tmp_path / "channels.toml") in message
    assert key in message
    assert "%%bad%%" not in message


def test_secrets_env_value_never_appears_in_errors(tmp_path: Path) -> None:
    settings = write(tmp_path, '[channels.x]\nsecrets_env = "PARTNER_SECRETS"\n')

    with pytest.raises(ConfigError) as info:
        load_channels(settings, environ={"PARTNER_SECRETS": "whsec_valid0= whsec_!!leak!!"})

    assert "PARTNER_SECRETS" in str(info.value)
    assert "secret #2" in str(info.value)
    assert "leak" not in str(info.value)


def test_unreadable_channels_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"

    with pytest.raises(ConfigError, match=r"absent\.toml"):
        load_channels(config(channels_file=str(missing)))


# -- mapping provider documents ----------------------------------------------------


def test_stripe_payment_intent_succeeded(tmp_path: Path) -> None:
    channel = stripe_channel(tmp_path)

    payload = channel.extract(payment_intent_event())

    assert payload == {
        "reference_number": "pi_3PMXq2LkdIwHu7ix1xYz",
        "amount": Decimal("10.50"),
        "loan_account_number": "LN-0000123",
        "cif": "CIF987",
        "payment_date": "2024-05-31T16:08:32+00:00",
        "payment_channel": "stripe",
        "metadata": {"loan_account_number": "LN-0000123", "cif": "CIF987", "currency": "usd"},
        "currency": "USD",
        "status": "succeeded",
        "event_id": "evt_3PMXq2LkdIwHu7ix0a1b2c3d",
        "event_time": "2024-05-31T16:08:37+00:00",
    }


def test_stripe_payload_passes_payment_validation(tmp_path: Path) -> None:
    payload = stripe_channel(tmp_path).extract(payment_intent_event())
    window = date_window(datetime(2024, 6, 1), 12, 31)

    payment = validate_payment(payload, window=window)

    assert payment.amount == Decimal("10.50")
    assert payment.status == "succeeded"
    assert payment.payment_date == datetime(2024, 5, 31, 16, 8, 32)
    assert payment.provider_event_at == datetime(2024, 5, 31, 16, 8, 37)


def test_stripe_charge_refunded_in_a_zero_decimal_currency(tmp_path: Path) -> None:
    channel = stripe_channel(tmp_path)

    payload = channel.extract(charge_refunded_event(amount=1050, currency="jpy"))

    # The charge is filed under its PaymentIntent, so the refund updates that payment.
    assert payload["reference_number"] == "pi_3PMXq2LkdIwHu7ix1xYz"
    assert payload["amount"] == Decimal("1050")
    assert payload["status"] == "refunded"
    assert payload["event_id"] == "evt_3PMXzzLkdIwHu7ix0refund"


def test_legacy_charge_without_payment_intent_uses_the_charge_id(tmp_path: Path) -> None:
    event = charge_refunded_event(currency="usd")
    event["data"]["object"]["payment_intent"] = None

    payload = stripe_channel(tmp_path).extract(event)

    assert payload["reference_number"] == "ch_3PMXq2LkdIwHu7ix1AbC"
    assert payload["amount"] == Decimal("10.50")


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (1050, "usd", Decimal("10.50")),
        (1050, "JPY", Decimal("1050")),
        (5, "krw", Decimal("5")),
        (12340, "kwd", Decimal("12.340")),
        (12345, "kwd", Decimal("12.345")),
        (1, "eur", Decimal("0.01")),
        (99999999999999, "usd", Decimal("999999999999.99")),
    ],
)
def test_minor_units_are_exact_decimals(
    tmp_path: Path, amount: int, currency: str, expected: Decimal
) -> None:
    payload = stripe_channel(tmp_path).extract(
        payment_intent_event(amount=amount, currency=currency)
    )

    assert payload["amount"] == expected
    assert isinstance(payload["amount"], Decimal)
    assert str(payload["amount"]) == str(expected)


@pytest.mark.parametrize("amount", [10.5, "10.50", True, {"value": 1}, 10**19, "1e3"])
def test_minor_units_must_be_integers(tmp_path: Path, amount: Any) -> None:
    event = payment_intent_event()
    event["data"]["object"]["amount"] = amount

    with pytest.raises(ValidationError) as info:
        stripe_channel(tmp_path).extract(event)
    assert info.value.field == "amount"


def test_missing_currency_is_refused_rather_than_guessed(tmp_path: Path) -> None:
    event = payment_intent_event()
    del event["data"]["object"]["currency"]

    with pytest.raises(ValidationError) as info:
        stripe_channel(tmp_path).extract(event)
    assert info.value.field == "data.object.currency"


def test_unmapped_event_type_is_ignored(tmp_path: Path) -> None:
    event = payment_intent_event(event_type="payment_intent.amount_capturable_updated")

    payload = stripe_channel(tmp_path).extract(event)

    assert payload == {
        "reference_number": "pi_3PMXq2LkdIwHu7ix1xYz",
        "event_id": "evt_3PMXq2LkdIwHu7ix0a1b2c3d",
        "event_time": "2024-05-31T16:08:37+00:00",
        "status": None,
        "ignored_event_type": "payment_intent.amount_capturable_updated",
    }


def test_unrelated_event_without_payment_fields_is_ignored(tmp_path: Path) -> None:
    event = {"id": "evt_c", "type": "customer.created", "created": NOW, "data": {"object": {}}}

    payload = stripe_channel(tmp_path).extract(event)

    assert payload["ignored_event_type"] == "customer.created"
    assert payload["status"] is None
    assert "amount" not in payload


def test_missing_event_type_is_a_validation_error(tmp_path: Path) -> None:
    event = payment_intent_event()
    del event["type"]

    with pytest.raises(ValidationError) as info:
        stripe_channel(tmp_path).extract(event)
    assert info.value.field == "type"


def test_missing_paths_are_simply_absent(tmp_path: Path) -> None:
    event = payment_intent_event()
    del event["data"]["object"]["metadata"]

    payload = stripe_channel(tmp_path).extract(event)

    assert "loan_account_number" not in payload
    assert "cif" not in payload
    assert payload["metadata"] == {"currency": "usd"}
    assert payload["reference_number"] == "pi_3PMXq2LkdIwHu7ix1xYz"


@pytest.mark.parametrize("doc", [[1, 2], "text", 42, None])
def test_non_object_documents_are_returned_as_is(tmp_path: Path, doc: Any) -> None:
    assert stripe_channel(tmp_path).extract(doc) == doc


def test_custom_mapping_with_list_index_fallback_constants_and_status_field(
    tmp_path: Path,
) -> None:
    text = """
[channels.bank]
scheme = "github"
secrets = ["k"]
[channels.bank.fields]
reference_number = ["txn.ref", "txn.id"]
loan_account_number = "txn.parties.1.account"
cif = "txn.parties.1.cif"
amount = "txn.value"
payment_date = "txn.booked"
status = "txn.state"
[channels.bank.constants]
payment_channel = "bank-transfer"
[channels.bank.status_map]
BOOKED = "succeeded"
REJECTED = "failed"
"""
    channel = load_channels(write(tmp_path, text)).get("bank")
    assert channel is not None
    doc = {
        "txn": {
            "id": "T-77",
            "value": "125.40",
            "booked": "2024-05-30T10:00:00Z",
            "state": "BOOKED",
            "parties": [{"account": "payer"}, {"account": "LN-1", "cif": 4242}],
        }
    }

    payload = channel.extract(doc)

    assert payload == {
        "reference_number": "T-77",
        "loan_account_number": "LN-1",
        "cif": "4242",  # numeric provider ids become text
        "amount": "125.40",
        "payment_date": "2024-05-30T10:00:00Z",
        "status": "succeeded",
        "payment_channel": "bank-transfer",
    }
    doc["txn"]["state"] = "HELD"
    assert channel.extract(doc)["ignored_event_type"] == "HELD"
