"""The framework's ceiling: an aiohttp handler that only reads, verifies and parses.

Same server settings as paygate (uvloop, one process, no access log); what paygate
adds on top of this is validation, deduplication and the durable write.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import orjson
from aiohttp import web

from gateway.ingest.signatures import SCHEMES, SignatureError, decode_secret


async def verified_json(request: web.Request, key: bytes) -> Any:
    """Read, verify (Standard Webhooks) and parse: the front every bench server shares.
    None when the signature is wrong."""
    body = await request.read()
    try:
        SCHEMES["standard"].verify(request.headers, body, (key,), now=time.time(), tolerance=300)
    except SignatureError:
        return None
    return orjson.loads(body)


def create_bare_app(key: bytes) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        doc = await verified_json(request, key)
        if doc is None:
            return web.Response(status=401)
        out = {"status": "parsed", "reference_number": doc.get("reference_number")}
        return web.Response(body=orjson.dumps(out), content_type="application/json")

    app = web.Application()
    app.router.add_post("/api/v1/payments/webhook", handle)
    return app


def run_bench_server(app: web.Application, port: int) -> None:
    """Serve like `paygate serve` does (uvloop, no access log) on loopback."""
    import uvloop

    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        reuse_port=True,  # the bench may start several copies on one port
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--secret", required=True)
    args = ap.parse_args()
    run_bench_server(create_bare_app(decode_secret("standard", args.secret)), args.port)


if __name__ == "__main__":
    main()
