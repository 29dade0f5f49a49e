"""Hostile input against the real webhook endpoint: never a 5xx, never an unverified row.

Hypothesis runs in a worker thread and hands each request to the test's event loop, so
the real app (real Postgres, Redis, Kafka) answers every example.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import asyncpg
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.ingest.signatures import sign
from tests.webhooks import GENERIC_KEY, payment_doc

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: huge numbers
    | st.integers(min_value=10**30, max_value=10**400)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)


def _dumps(value: Any) -> bytes:
    """stdlib json: it writes integers of any size, which is the point."""
    return json.dumps(value).encode()


def _deep(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


field_values = st.one_of(
    json_values,
    st.sampled_from(
        ["1e400", "NaN", "-0.00", "0.001", "\uff11\uff12\uff13", "12,50", "\u202e99", "\x00"]
    ),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
    st.text(min_size=90, max_size=400),
)


@st.composite
def payment_like(draw: st.DrawFn) -> bytes:
    doc = payment_doc(f"FZ-{uuid.uuid4().hex[:20]}")
    for name in draw(st.lists(st.sampled_from([*sorted(doc), "status", "extra"]), max_size=3)):
        if draw(st.booleans()):
            doc.pop(name, None)
        else:
            doc[name] = draw(field_values)
    return _dumps(doc)


@st.composite
def duplicate_keys(draw: st.DrawFn) -> bytes:
    ref = f"FZ-{uuid.uuid4().hex[:20]}"
    first = draw(st.sampled_from(['"10.00"', "10", '"abc"', "null"]))
    return (
        b'{"reference_number":"' + ref.encode() + b'","loan_account_number":"LA-1","cif":"C-1",'
        b'"amount":' + first.encode() + b',"payment_date":"'
        + time.strftime("%Y-%m-%d").encode() + b'","amount":"20.00","amount":-5}'
    )  # fmt: skip


bodies = st.one_of(
    payment_like(),  # weighted: most examples get as far as validation and the writer
    payment_like(),
    payment_like(),
    st.binary(max_size=2048),
    json_values.map(_dumps),
    payment_like(),
    duplicate_keys(),
    st.tuples(st.integers(1, 20_000), st.sampled_from(["list", "dict"])).map(lambda a: _deep(*a)),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.just(b"\xff\xfe\xfa{}"),
)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
junk_headers = st.dictionaries(
    st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "Content-Type",
                     "Idempotency-Key", "X-Forwarded-For", "Forwarded", "X-Request-ID", "X-Junk"]),
    header_text,
    max_size=4,
)  # fmt: skip
channels = st.one_of(
    st.none(), st.just("generic"), st.text(max_size=20).map(lambda t: quote(t, safe=""))
)


async def test_fuzzed_webhooks_never_5xx_and_never_record_unverified(
    make_client: MakeClient, db: asyncpg.Pool
) -> None:
    client = await make_client()
    loop = asyncio.get_running_loop()
    created: list[str] = []
    unverified_2xx: list[tuple[int, str, dict[str, str], bytes]] = []
    server_errors: list[tuple[int, bytes, str]] = []

    async def send(body: bytes, headers: dict[str, str], channel: str | None, signed: bool) -> None:
        path = "/api/v1/payments/webhook" + (f"/{channel}" if channel else "")
        resp = await client.post(path, data=body, headers=headers)
        text = await resp.text()
        if resp.status >= 500:
            server_errors.append((resp.status, body[:200], text[:200]))
        elif resp.status == 201:
            created.append(text)
        if not signed and resp.status < 300:
            unverified_2xx.append((resp.status, path, headers, body[-80:]))

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(
        body=bodies,
        headers=junk_headers,
        channel=channels,
        mode=st.sampled_from(["none", "signed", "stale"]),
    )
    def run(body: bytes, headers: dict[str, str], channel: str | None, mode: str) -> None:
        headers, channel = dict(headers), channel or None
        if mode != "none":
            now = int(time.time()) - (3600 if mode == "stale" else 0)
            headers.update(
                sign("standard", GENERIC_KEY, body, now=now, delivery_id=f"msg_{uuid.uuid4().hex}")
            )
        signed = mode == "signed" and channel in (None, "generic")
        asyncio.run_coroutine_threadsafe(send(body, headers, channel, signed), loop).result(30)

    await asyncio.to_thread(run)

    assert server_errors == []
    assert unverified_2xx == []
    rows = await db.fetchval("SELECT count(*) FROM payment_service.payments")
    assert rows == len(created)
