"""Currency exponents: what one minor unit of a provider's amount is worth, per currency.

Providers that send integer amounts do not agree on what a minor unit is. Adyen counts
CLP in hundredths where ISO 4217 has none; Checkout.com sends ISK in whole krónur where
Stripe and Adyen send hundredths; Razorpay, Paddle and Square each publish their own
list. One table for every provider recorded some payments 100 times too large or too
small, so each preset declares its provider's table (`[minor_units]`, decimals ->
currencies, with the provider's page cited beside it), a channel may correct or extend
it currency by currency, and a currency the table does not list is refused with its
code named (422), never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from gateway.errors import ConfigError, ValidationError

# payments.amount keeps up to 3 decimals (sql/110): no provider table goes further.
MAX_EXPONENT = 3
_CODE = re.compile(r"[A-Za-z]{3}")
_ISO = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True)
class CurrencyTable:
    """ISO 4217 alphabetic code -> decimals of the provider's minor unit."""

    exponents: Mapping[str, int]

    def exponent(self, code: str) -> int | None:
        return self.exponents.get(code)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.exponents))

    def __len__(self) -> int:
        return len(self.exponents)


def currency_code(value: Any, where: str) -> str:
    """A provider's currency as an upper-case ISO 4217 code (Stripe sends `usd`).

    Anything else is refused without echoing it: only a well-formed code is ever named
    back in an error."""
    if not isinstance(value, str) or _CODE.fullmatch(value) is None:
        raise ValidationError(where, "expected a 3-letter ISO 4217 currency code")
    return value.upper()


def unknown_currency(code: str, where: str) -> ValidationError:
    return ValidationError(
        where, f"unknown currency {code}: not in this channel's [minor_units] table"
    )


def major_units(minor: int, exponent: int) -> Decimal:
    """An integer of minor units as an exact Decimal of major units (never a float)."""
    return Decimal(minor).scaleb(-exponent)


def merge_tables(base: Any, over: Any) -> Any:
    """A channel's `[minor_units]` over its preset's, currency by currency: a currency the
    channel lists moves to the channel's exponent, every other keeps the preset's."""
    if not isinstance(base, dict) or not isinstance(over, dict):
        return over
    moved = {c for codes in over.values() if isinstance(codes, list) for c in codes}
    merged: dict[str, Any] = {
        key: [c for c in codes if c not in moved] if isinstance(codes, list) else codes
        for key, codes in base.items()
    }
    for key, codes in over.items():
        if isinstance(codes, list) and isinstance(merged.get(key), list):
            merged[key] = merged[key] + codes
        else:
            merged[key] = codes
    return merged


def parse_table(raw: Any, fail: Callable[[str, str], ConfigError]) -> CurrencyTable:
    """`{"0": ["JPY", ...], "2": [...], "3": [...]}` from a channel table; ConfigError
    naming the key on any flaw."""
    if not isinstance(raw, dict) or not raw:
        raise fail("minor_units", "expected a table of decimals = [currency codes]")
    exponents: dict[str, int] = {}
    for key, codes in raw.items():
        if not (isinstance(key, str) and key.isdigit() and int(key) <= MAX_EXPONENT):
            raise fail(f"minor_units.{key}", f"expected a number of decimals, 0 to {MAX_EXPONENT}")
        if not isinstance(codes, list):
            raise fail(f"minor_units.{key}", "expected a list of currency codes")
        for code in codes:
            if not isinstance(code, str) or _ISO.fullmatch(code) is None:
                raise fail(f"minor_units.{key}", f"{code!r} is not an upper-case ISO 4217 code")
            if code in exponents:
                raise fail(f"minor_units.{key}", f"{code} is listed twice")
            exponents[code] = int(key)
    return CurrencyTable(exponents)


# The one table every channel used before presets had their own (Stripe's lists): what a
# payment recorded before sql/110 was converted with. `paygate payments
# suspect-exponents` compares each preset's table with it.
LEGACY_ZERO_DECIMAL = frozenset(
    [
        "BIF",
        "CLP",
        "DJF",
        "GNF",
        "JPY",
        "KMF",
        "KRW",
        "MGA",
        "PYG",
        "RWF",
        "UGX",
        "VND",
        "VUV",
        "XAF",
        "XOF",
        "XPF",
    ]
)
LEGACY_THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})


def legacy_exponent(code: str) -> int:
    if code in LEGACY_ZERO_DECIMAL:
        return 0
    return 3 if code in LEGACY_THREE_DECIMAL else 2


def unaffected(table: CurrencyTable) -> list[str]:
    """The currencies of `table` the legacy conversion already got right."""
    return [code for code in table if table.exponent(code) == legacy_exponent(code)]


def meant_amount(recorded: Decimal, code: str, table: CurrencyTable) -> Decimal | None:
    """What a payment recorded with the legacy exponent should have been (None: the
    provider's table does not list the currency, so nobody can say)."""
    exponent = table.exponent(code)
    if exponent is None:
        return None
    meant = recorded.scaleb(legacy_exponent(code) - exponent)
    tidy = meant.quantize(Decimal(1).scaleb(-max(exponent, 2)))
    return tidy if tidy == meant else meant
