"""The naive design, measured beside ours: one transaction per request.

Same signature check and validation as paygate, then per request: SELECT the
reference, INSERT the payment, INSERT the reference, COMMIT. Correct (the reference
primary key still prevents doubles) but every request pays a full commit.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import orjson
from aiohttp import web

from bench.bare import run_bench_server, verified_json
from gateway.domain.ids import uuid7
from gateway.domain.validation import date_window, validate_payment
from gateway.ingest.signatures import decode_secret

POOL = web.AppKey("pool", asyncpg.Pool)


def create_naive_app(key: bytes, dsn: str, pool_size: int = 10) -> web.Application:
    window = date_window(datetime.now(UTC), 12, 31)

    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        app[POOL] = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)
        yield
        await app[POOL].close()

    async def handle(request: web.Request) -> web.Response:
        doc = await verified_json(request, key)
        if doc is None:
            return web.Response(status=401)
        p = validate_payment(doc, window=window)
        async with request.app[POOL].acquire() as conn, conn.transaction():
            existing = await conn.fetchval(
                "SELECT payment_id FROM payment_service.payment_references"
                " WHERE reference_number = $1",
                p.reference_number,
            )
            if existing is not None:
                out = {"status": "duplicate", "payment_id": str(existing)}
                return web.Response(body=orjson.dumps(out), content_type="application/json")
            pid = uuid7()
            await conn.execute(
                "INSERT INTO payment_service.payments (id, reference_number, loan_account_number,"
                " cif, amount, payment_date, payment_channel, source, metadata)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, 'webhook', $8::jsonb)",
                pid, p.reference_number, p.loan_account_number, p.cif, p.amount,
                p.payment_date, p.payment_channel, orjson.dumps(p.metadata).decode(),
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO payment_service.payment_references"
                " (reference_number, payment_id, payment_date, payload_hash) VALUES ($1, $2, $3, $4)",
                p.reference_number, pid, p.payment_date, bytes.fromhex(p.payload_hash),
            )  # fmt: skip
        out = {"status": "created", "payment_id": str(pid)}
        return web.Response(body=orjson.dumps(out), status=201, content_type="application/json")

    app = web.Application()
    app.cleanup_ctx.append(pool_ctx)
    app.router.add_post("/api/v1/payments/webhook", handle)
    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--dsn", required=True)
    args = ap.parse_args()
    run_bench_server(create_naive_app(decode_secret("standard", args.secret), args.dsn), args.port)


if __name__ == "__main__":
    main()
