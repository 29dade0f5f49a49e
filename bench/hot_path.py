"""CPU of the pure steps every new payment takes, one at a time, without a server.

`bench.inproc` gives the server's whole cost per payment but swings by ±10% from run to
run; this times the pure steps that make it up (validation, the business hash, the
payment id, the candidate, the id as text) over the same bodies the load generator
sends, best of `--repeat`, so two trees can be compared step by step (the recording
statement is `bench.inproc`'s to measure: it needs the database):

    python -m bench.hot_path
    cd <other tree> && python -m bench.hot_path      # the same figures for that code
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from bench.loadgen import payment_body
from gateway.db.payments import Candidate
from gateway.domain.ids import uuid7
from gateway.domain.validation import date_window, validate_payment


def best_us(step: Callable[[Any], object], items: list[Any], repeat: int) -> float:
    """The fastest of `repeat` passes over `items`, in µs per item (CPU time)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for item in items:
            step(item)
        best = min(best, time.process_time() - started)
    return 1e6 * best / len(items)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--payments", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    now = datetime.now(UTC)
    bodies = [payment_body(f"B-{uuid.uuid4().hex}", now) for _ in range(args.payments)]
    docs = [orjson.loads(b) for b in bodies]
    window = date_window(now, 12, 30)
    payments = [validate_payment(d, window=window) for d in docs]
    steps: dict[str, tuple[Callable[[Any], object], list[Any]]] = {
        "validate a body": (lambda d: validate_payment(d, window=window), docs),
        "business hash": (
            lambda d: validate_payment(d, window=window).payload_hash,
            docs,
        ),
        "payment id (uuid7)": (lambda _: uuid7(), docs),
        "candidate (with its id)": (lambda p: Candidate(p, "generic", None, b""), payments),
        "payment id as text": (lambda c: str(c.payment_id), [Candidate(p) for p in payments]),
    }
    figures = {name: best_us(step, items, args.repeat) for name, (step, items) in steps.items()}
    figures["business hash"] -= figures["validate a body"]  # measured on fresh payments
    for name, us in figures.items():
        print(f"{name:26s} {us:6.2f} µs")


if __name__ == "__main__":
    main()
