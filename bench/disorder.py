"""The disorder run, longer: rounds of random payment histories delivered shuffled, a
quarter twice, by concurrent clients to several `paygate serve` processes, each round
checked against the README's lifecycle rules (tests/faults/disorder.py).

    python -m bench.disorder --seconds 300 --references 1000 --clients 32 --processes 2

Starts its own embedded Postgres, Redis and broker in a temp dir. Rounds run until
`--seconds` have passed (the round in progress finishes; each round has its own
deadline); round n uses seed `--seed` + n. Prints one line per round and a total:
deliveries, answers, and every kind of finding (missing, doubled, wrong final state,
illegal move, broken chain, version or event count off, left parked). Exit code 1 if
any round found anything.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from pathlib import Path

from bench.stack import bench_stack
from tests.faults.disorder import check, deliveries, generate, send_all
from tests.faults.harness import GatewayProcess, gateway_env


async def main_async(args: argparse.Namespace) -> int:
    async with bench_stack("paygate-disorder-", kafka=True) as stack:
        env = gateway_env(
            database_url=stack.pg.url,
            redis_url=stack.redis.url,
            kafka_bootstrap=stack.kafka_url,
            secret=stack.secret,
            topic="payment.events.disorder",
            data_dir=Path(stack.root) / "gateway",
            db_pool_max=10,
            webhook_timeout_ms=5000,
        )
        gateways = [
            GatewayProcess(env, Path(stack.root) / f"gateway-{n}.log")
            for n in range(args.processes)
        ]
        await asyncio.gather(*(g.start(timeout=60) for g in gateways))
        try:
            return await rounds(args, [g.url for g in gateways], stack.secret, stack.pg.url)
        finally:
            await asyncio.gather(*(g.stop() for g in gateways))


async def rounds(args: argparse.Namespace, urls: list[str], secret: str, dsn: str) -> int:
    started = time.monotonic()
    answers: Counter[int] = Counter()
    findings = 0
    n = 0
    while n == 0 or time.monotonic() - started < args.seconds:
        seed = args.seed + n
        prefix = f"DIS{n:04d}"
        histories = generate(seed, args.references, prefix)
        todo = deliveries(histories, seed, resend=args.resend, clustered=args.clustered)
        t = time.monotonic()
        tally = await send_all(
            urls, secret, todo, clients=args.clients, deadline=t + args.round_deadline
        )
        verdict = await check(dsn, histories, prefix)
        answers.update(tally.answers)
        bad = (not verdict.ok) or tally.refused or tally.unacknowledged
        findings += bool(bad)
        print(
            f"round {n} seed={seed}: {len(histories)} histories, {len(todo)} deliveries in "
            f"{time.monotonic() - t:.1f}s, answers={dict(sorted(tally.answers.items()))}, "
            f"retries={tally.retries}, refused={len(tally.refused)}, "
            f"unacknowledged={len(tally.unacknowledged)}: "
            f"{'OK' if not bad else 'FOUND'} {verdict}",
            flush=True,
        )
        n += 1
    print(
        f"total: {n} rounds in {time.monotonic() - started:.0f}s, "
        f"answers={dict(sorted(answers.items()))}, rounds with findings={findings}"
    )
    return 1 if findings else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120, help="start no round after this")
    ap.add_argument("--references", type=int, default=1000, help="histories per round")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--processes", type=int, default=2, help="paygate serve processes")
    ap.add_argument("--resend", type=float, default=0.25, help="share of deliveries sent twice")
    ap.add_argument("--seed", type=int, default=33)
    ap.add_argument(
        "--clustered",
        action="store_true",
        help="send each payment's deliveries together (races) instead of spread",
    )
    ap.add_argument("--round-deadline", type=float, default=300, help="seconds per round")
    args = ap.parse_args()
    sys.exit(asyncio.run(main_async(args)))


if __name__ == "__main__":
    main()
