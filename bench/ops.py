"""Ops API and console latency at volume: p50/p95/p99 of payment search and a payment's
page, through `paygate serve`, at a million payments.

    python -m bench.ops --payments 1000000 --requests 300

A private embedded stack, filled in SQL by tests/ops_plans.py (the same bench-like data
the plan test uses: a long tail of customers, a delivery and an audit row per payment,
refused deliveries, reconciliation runs with exceptions, reviews, outbox rows); then the
plan check on that database (every ops query index-served, or which is not); then one
client on one keep-alive connection asks each endpoint in turn, a different payment each
time, so machine noise falls on every endpoint alike. Every figure is given with its
ratio to the same run's baseline, `GET /health/live` (the server's cheapest answer: no
database, no template). A non-200 answer stops the run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg

from bench.run_all import Server
from bench.stack import bench_stack
from gateway.http.console import session as sessions
from gateway.security.auth import READ, mint_token
from tests import ops_plans
from workers.cli.devstack import free_port

SECRET = "bench-ops-admin-jwt-secret-0123456789abcdef"


@dataclass(frozen=True)
class Key:
    payment_id: str
    reference: str
    cif: str
    account: str


@dataclass
class Endpoint:
    name: str
    path: Callable[[Key], str]
    console: bool = False
    times: list[float] = field(default_factory=list)


def endpoints(pending_cursor: str) -> list[Endpoint]:
    api, page = "/api/v1/payments", "/console/payments"
    return [
        Endpoint("baseline: GET /health/live", lambda k: "/health/live"),
        Endpoint("API search: newest page", lambda k: f"{api}?limit=50"),
        Endpoint("API search: by reference", lambda k: f"{api}?reference_number={k.reference}"),
        Endpoint("API search: by cif", lambda k: f"{api}?cif={k.cif}"),
        Endpoint("API search: by loan account", lambda k: f"{api}?loan_account_number={k.account}"),
        Endpoint(
            "API search: pending, 2nd page",
            lambda k: f"{api}?status=pending&limit=50&cursor={pending_cursor}",
        ),
        Endpoint("API payment + timeline (by id)", lambda k: f"{api}/{k.payment_id}"),
        Endpoint("API payment + timeline (by reference)", lambda k: f"{api}/{k.reference}"),
        Endpoint("API deliveries: refused, newest", lambda k: "/api/v1/deliveries?outcome=invalid"),
        Endpoint("API exceptions: open queue", lambda k: "/api/v1/reconciliation/exceptions"),
        Endpoint("console: login page (template, no db)", lambda k: "/console/login", True),
        Endpoint("console search: newest page", lambda k: page, True),
        Endpoint(
            "console search: by reference", lambda k: f"{page}?reference_number={k.reference}", True
        ),
        Endpoint("console search: by cif", lambda k: f"{page}?cif={k.cif}", True),
        Endpoint("console payment page", lambda k: f"{page}/{k.payment_id}", True),
    ]


async def _keys(conn: asyncpg.Connection, payments: int, count: int) -> list[Key]:
    rng = random.Random(20)
    refs = [f"REF-{rng.randint(1, payments)}" for _ in range(count)]
    rows = await conn.fetch(
        "SELECT id::text, reference_number, cif, loan_account_number"
        " FROM payment_service.payments WHERE reference_number = ANY($1::text[])",
        refs,
    )
    return [Key(*r) for r in rows]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(base: str, endpoints: list[Endpoint], keys: list[Key], token: str,
                  cookie: str, requests: int, warm_up: int) -> None:  # fmt: skip
    bearer = {"Authorization": f"Bearer {token}"}
    jar = aiohttp.CookieJar(unsafe=True)
    conn = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(base, connector=conn, cookie_jar=jar) as http:
        http.cookie_jar.update_cookies({sessions.COOKIE: cookie})
        for i in range(warm_up + requests):
            key = keys[i % len(keys)]
            for ep in endpoints:
                started = time.perf_counter()
                async with http.get(ep.path(key), headers=None if ep.console else bearer) as r:
                    await r.read()
                    if r.status != 200:
                        raise SystemExit(f"{ep.name}: {r.status} {(await r.text())[:300]}")
                if i >= warm_up:
                    ep.times.append((time.perf_counter() - started) * 1000)


async def main_async(args: argparse.Namespace) -> None:
    load_before = os.getloadavg()
    async with bench_stack("paygate-ops-") as stack:
        conn = await asyncpg.connect(stack.pg.url)
        try:
            started = time.monotonic()
            sample = await ops_plans.fill(conn, args.payments)
            filled = time.monotonic() - started
            print(f"filled {args.payments:,} payments (and the rest) in {filled:.0f} s")
            checked = await ops_plans.check_all(conn, sample)
            bad = {name: found for name, (_, found) in checked.items() if found}
            print(f"plans: {len(checked) - len(bad)} of {len(checked)} queries index-served")
            for name, found in bad.items():
                print(f"  NOT index-served: {name}: {'; '.join(found)}")
                print("    " + ops_plans.render(checked[name][0]).replace("\n", "\n    "))
            keys = await _keys(conn, args.payments, args.requests)
            size = await conn.fetchval(
                "SELECT pg_size_pretty(pg_database_size(current_database()))"
            )
        finally:
            await conn.close()
        token = mint_token(SECRET, "bench", [READ], ttl=7200)
        cookie, _ = sessions.new_session(SECRET, token)
        port = free_port()
        env = stack.server_env(PORT=str(port), WEB_CONCURRENCY="1", ADMIN_JWT_SECRET=SECRET)
        async with Server([sys.executable, "-m", "workers.cli", "serve"], env, port):
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{port}/api/v1/payments?status=pending&limit=50"
                async with http.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
                    first: dict[str, Any] = await r.json()
            eps = endpoints(first["next_cursor"])
            began = time.monotonic()
            await measure(f"http://127.0.0.1:{port}", eps, keys, token, cookie,
                          args.requests, args.warm_up)  # fmt: skip
            took = time.monotonic() - began
    load_after = os.getloadavg()
    base95 = pct(eps[0].times, 0.95)
    print(f"\ndatabase {size}; {args.requests} measured requests per endpoint after "
          f"{args.warm_up} unmeasured, one connection, {took:.0f} s; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (1 min)\n")  # fmt: skip
    print("| endpoint | p50 ms | p95 ms | p99 ms | max ms | p95 / baseline p95 |")
    print("|---|---:|---:|---:|---:|---:|")
    for ep in eps:
        t = ep.times
        print(f"| {ep.name} | {statistics.median(t):.1f} | **{pct(t, 0.95):.1f}** | "
              f"{pct(t, 0.99):.1f} | {max(t):.1f} | {pct(t, 0.95) / base95:.1f} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--payments", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=300, help="measured requests per endpoint")
    ap.add_argument("--warm-up", type=int, default=20, help="unmeasured rounds first")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
