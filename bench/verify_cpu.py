"""Signature verification CPU per request, every scheme beside Standard Webhooks.

Each scheme verifies a delivery shaped like its provider's (a payment event of about
1 KiB; Adyen and GoCardless also with 10 events in one request) with the headers in
a CIMultiDictProxy, as aiohttp hands them to the handler. CPU time is
`time.process_time` over `--calls` verifications; the schemes take turns, round
after round, so a busy neighbour on a shared machine slows all of them alike, and the
median round is reported with its ratio to Standard Webhooks in the same run.
PayPal's certificate is already cached (the steady state: one fetch per certificate).

    python -m bench.verify_cpu --rounds 7 --calls 2000
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.ingest.schemes import adyen, paddle, paypal, square
from gateway.ingest.schemes.hmac_hex import HexBodyScheme
from gateway.ingest.schemes.registry import build_scheme, decode_key
from gateway.ingest.signatures import SCHEMES, Scheme, decode_secret, sign
from tests.paypal_ca import pem, private_ca

SECRET = "bench-provider-secret-0001"
ADYEN_HEX = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
SQUARE_URL = "https://pay.example.com/api/v1/payments/webhook/square"
PAYPAL_CERT_URL = "https://api.paypal.com/v1/notifications/certs/CERT-bench"
WEBHOOK_ID = "8PT597110X687430LKGECATA"


def _event(extra: int = 0) -> dict[str, Any]:
    """A payment event of about 1 KiB (the size of a typical provider delivery)."""
    return {
        "id": f"evt_{uuid.uuid4().hex}",
        "type": "payment.captured",
        "created_at": "2026-11-24T10:00:01Z",
        "data": {
            "id": f"pay_{uuid.uuid4().hex[:14]}",
            "amount": 150025 + extra,
            "currency": "EUR",
            "status": "captured",
            "metadata": {"loan_account_number": "LN-42", "cif": "CIF-7"},
            "description": "x" * 700,
        },
    }


Case = tuple[Scheme, Mapping[str, str], bytes, tuple[bytes, ...]]


def _headers(raw: Mapping[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(raw))


def cases(now: int) -> dict[str, Case]:
    body = orjson.dumps(_event())
    utf8 = SECRET.encode()
    out: dict[str, Case] = {}

    for name in ("standard", "stripe", "github", "shopify"):
        secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" if name == "standard" else SECRET
        key = decode_secret(name, secret)
        headers = sign(name, key, body, now=now, delivery_id="msg_bench")
        out[name] = (SCHEMES[name], _headers(headers), body, (key,))

    def hex_case(name: str, payload: bytes) -> Case:
        scheme = build_scheme(name, {})
        assert isinstance(scheme, HexBodyScheme)
        return scheme, _headers(scheme.sign(utf8, payload, delivery_id="evt_1")), payload, (utf8,)

    out["razorpay"] = hex_case("razorpay", body)
    out["checkout"] = hex_case("checkout", body)
    out["gocardless"] = hex_case("gocardless", orjson.dumps({"events": [_event()]}))
    out["gocardless x10"] = hex_case(
        "gocardless", orjson.dumps({"events": [_event(i) for i in range(10)]})
    )
    out["paddle"] = (
        build_scheme("paddle", {}),
        _headers(paddle.sign(utf8, body, now=now)),
        body,
        (utf8,),
    )
    out["square"] = (
        build_scheme("square", {"notification_url": SQUARE_URL}),
        _headers(square.sign(utf8, SQUARE_URL, body)),
        body,
        (utf8,),
    )

    adyen_key = decode_key("adyen", ADYEN_HEX)

    def adyen_case(count: int) -> Case:
        items = [
            {
                "eventCode": "AUTHORISATION",
                "success": "true",
                "pspReference": f"psp{uuid.uuid4().hex[:13]}",
                "merchantAccountCode": "BenchMerchant",
                "merchantReference": "LN-42",
                "amount": {"value": 150025 + i, "currency": "EUR"},
                "eventDate": "2026-11-24T10:00:01+01:00",
                "additionalData": {"metadata.cif": "CIF-7", "note": "x" * 500},
            }
            for i in range(count)
        ]
        payload = adyen.notification(adyen_key, items)
        return build_scheme("adyen", {}), _headers({}), payload, (adyen_key,)

    out["adyen"] = adyen_case(1)
    out["adyen x10"] = adyen_case(10)

    ca = private_ca()
    ca_file = os.path.join(os.path.dirname(__file__), ".bench-paypal-ca.pem")
    with open(ca_file, "wb") as fh:
        fh.write(pem(ca.root))
    try:
        scheme = build_scheme("paypal", {"webhook_id": WEBHOOK_ID, "ca_file": ca_file})
    finally:
        os.unlink(ca_file)
    assert isinstance(scheme, paypal.PayPalScheme)
    scheme.certificates.add(PAYPAL_CERT_URL, pem(ca.signing))
    headers = paypal.sign(ca.signing_key, body, cert_url=PAYPAL_CERT_URL, webhook_id=WEBHOOK_ID,
                          transmission_id=str(uuid.uuid4()), now=now)  # fmt: skip
    out["paypal (RSA-2048)"] = (scheme, _headers(headers), body, ())
    return out


def measure(run: Callable[[], Any], calls: int) -> float:
    """CPU µs per call."""
    start = time.process_time()
    for _ in range(calls):
        run()
    return (time.process_time() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    now = int(time.time())
    table = cases(now)
    runners: dict[str, Callable[[], Any]] = {}
    for name, (scheme, headers, body, keys) in table.items():
        scheme.verify(headers, body, keys, now=now, tolerance=300)  # each one passes first
        runners[name] = functools.partial(scheme.verify, headers, body, keys, now=now,
                                          tolerance=300)  # fmt: skip
    samples: dict[str, list[float]] = {name: [] for name in runners}
    load = os.getloadavg()
    for _ in range(args.rounds):
        for name, run in runners.items():
            samples[name].append(measure(run, args.calls))
    base = statistics.median(samples["standard"])
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip
    print(f"{args.rounds} rounds x {args.calls} calls, median round (min-max)\n")
    print("| scheme | body bytes | CPU µs per request | ratio to standard |")
    print("|---|---:|---:|---:|")
    for name, values in samples.items():
        med = statistics.median(values)
        size = len(table[name][2])
        print(f"| {name} | {size:,} | {med:.1f} ({min(values):.1f}-{max(values):.1f}) "
              f"| {med / base:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
