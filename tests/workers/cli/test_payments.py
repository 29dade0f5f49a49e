"""`paygate payments suspect-exponents` finds the payments recorded before sql/110 with an
exponent their provider does not use, and only those."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from gateway.ingest.channels import load_preset
from gateway.ingest.currencies import CurrencyTable, legacy_exponent, meant_amount

DAY = datetime(2026, 11, 20, 12, 0)
# (payment_channel, metadata.currency, amount as recorded, currency column)
ROWS = {
    "S-ADYEN-CLP": ("adyen", "CLP", "150000.00", None),  # Adyen meant 1500.00
    "S-CKO-ISK": ("checkout", "ISK", "50.00", None),  # Checkout.com meant 5000.00
    "S-RZP-ISK": ("razorpay", "isk", "50.00", None),  # Razorpay meant 5000.00
    "S-ADYEN-XTS": ("adyen", "XTS", "12.00", None),  # not in Adyen's table at all
    "OK-ADYEN-EUR": ("adyen", "EUR", "11.30", None),  # both tables agree
    "OK-STRIPE-JPY": ("stripe", "jpy", "5000.00", None),  # Stripe's own table
    "OK-AFTER-FIX": ("adyen", "CLP", "1500.00", "CLP"),  # recorded with the fix
    "OK-PAYPAL": ("paypal", "JPY", "5000.00", None),  # decimal strings: no exponent
    "S-MINE-CLP": ("my-adyen", "CLP", "250000.00", None),  # only with --channel
}


async def seed(db: asyncpg.Pool) -> None:
    for ref, (channel, code, amount, currency) in ROWS.items():
        await db.execute(
            "INSERT INTO payment_service.payments (id, reference_number, loan_account_number,"
            " cif, amount, currency, payment_date, payment_channel, source, metadata)"
            " VALUES ($1, $2, 'LA', 'CIF', $3, $4, $5, $6, 'webhook', $7)",
            uuid.uuid4(), ref, Decimal(amount), currency, DAY, channel,
            {"currency": code, "note": "Ñandú"},
        )  # fmt: skip


async def paygate(stack: Any, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")}
    env.update(DATABASE_URL=stack.database_url, LOG_LEVEL="WARNING")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.cli", "payments", "suspect-exponents", *args,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def listed(out: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in out.splitlines()[1:-1]}


async def test_the_wrongly_converted_payments_are_listed_with_what_was_meant(
    db: asyncpg.Pool, stack: Any
) -> None:
    await seed(db)
    code, out, err = await paygate(stack)
    assert code == 0, err
    rows = listed(out)
    assert set(rows) == {"S-ADYEN-CLP", "S-CKO-ISK", "S-RZP-ISK", "S-ADYEN-XTS"}, out
    assert rows["S-ADYEN-CLP"][1:5] == ["adyen", "CLP", "150000.00", "1500.00"]
    assert rows["S-CKO-ISK"][1:5] == ["checkout", "ISK", "50.00", "5000.00"]
    assert rows["S-RZP-ISK"][1:5] == ["razorpay", "ISK", "50.00", "5000.00"]
    assert rows["S-ADYEN-XTS"][1:5] == ["adyen", "XTS", "12.00", "not"]  # not in its table
    assert out.splitlines()[-1].startswith("4 payment(s): ")

    code, out, err = await paygate(stack, "--channel", "my-adyen=adyen")
    assert code == 0, err
    assert listed(out)["S-MINE-CLP"][1:5] == ["my-adyen", "CLP", "250000.00", "2500.00"]
    code, out, _ = await paygate(stack, "--until", "2026-11-01")
    assert out.strip() == "no payments recorded with a wrong currency exponent"
    code, _, err = await paygate(stack, "--channel", "x=paypal")
    assert code == 2 and "VALUE=PRESET" in err


def test_meant_amounts_follow_each_providers_table() -> None:
    def table(preset: str) -> CurrencyTable:
        raw = load_preset(preset)["minor_units"]
        return CurrencyTable({c: int(e) for e, codes in raw.items() for c in codes})

    assert legacy_exponent("CLP") == 0 and legacy_exponent("KWD") == 3
    assert meant_amount(Decimal("150000.00"), "CLP", table("adyen")) == Decimal("1500.00")
    assert meant_amount(Decimal("12.34"), "IQD", table("adyen")) == Decimal("1.234")
    assert meant_amount(Decimal("15.00"), "IDR", table("adyen")) == Decimal("1500.00")
    assert meant_amount(Decimal("1.00"), "XTS", table("adyen")) is None
