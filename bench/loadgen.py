"""Open-loop load generator for signed webhooks.

Requests are scheduled at a fixed rate and their latency is measured from the
*scheduled* send time, so a server that falls behind shows it as latency instead of
silently slowing the generator down (no coordinated omission). The client speaks
HTTP/1.1 over raw asyncio streams with keep-alive: an aiohttp client would burn the
CPU the server under test needs on this 2-core machine.

    python -m bench.loadgen --url http://127.0.0.1:3004 --rate 5000 --seconds 60 \
        --secret-file .paygate/dev-webhook-secret --dup-ratio 0.1

`--rate 0` is closed-loop: every connection sends as fast as answers come back, to find
a server's ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import orjson

from gateway.ingest.signatures import decode_secret, sign

PATH = "/api/v1/payments/webhook"


@dataclass
class Result:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    scheduled: list[float] = field(default_factory=list)  # send offsets, for `windows`
    errors: int = 0
    # With `track`: every 2xx request (the raw bytes sent) and the wall-clock time its
    # answer came back, for benches that follow each payment further (bench.e2e).
    acks: list[tuple[bytes, float]] | None = None
    started: float = 0.0
    finished: float = 0.0

    @property
    def elapsed(self) -> float:
        return max(1e-9, self.finished - self.started)

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(q * len(data)))]

    def windows(self, width: float = 10.0) -> list[float]:
        """p99 (ms) of the requests scheduled in each `width`-second window of the run:
        a tail that grows with the run (tables, caches, heaps) shows here, not in one p99."""
        buckets: dict[int, list[float]] = {}
        for at, latency in zip(self.scheduled, self.latencies, strict=True):
            buckets.setdefault(int(at // width), []).append(latency)
        out = []
        for key in sorted(buckets):
            data = sorted(buckets[key])
            out.append(round(data[min(len(data) - 1, int(0.99 * len(data)))] * 1000, 1))
        return out

    def summary(self) -> dict[str, object]:
        done = sum(self.statuses.values())
        return {
            "sent": self.sent,
            "completed": done,
            "throughput_rps": round(done / self.elapsed, 1),
            "created_rps": round(self.statuses.get(201, 0) / self.elapsed, 1),
            "p50_ms": round(self.percentile(0.50) * 1000, 2),
            "p95_ms": round(self.percentile(0.95) * 1000, 2),
            "p99_ms": round(self.percentile(0.99) * 1000, 2),
            "max_ms": round(max(self.latencies, default=float("nan")) * 1000, 2),
            "statuses": dict(sorted(self.statuses.items())),
            "errors": self.errors,
            "seconds": round(self.elapsed, 2),
            "p99_ms_by_10s": self.windows(),
        }


def payment_body(ref: str, now: datetime) -> bytes:
    return orjson.dumps(
        {
            "reference_number": ref,
            "loan_account_number": f"LA{random.randrange(10**8):08d}",
            "cif": f"CIF{random.randrange(10**6):06d}",
            "amount": f"{random.randrange(100, 10**7) / 100:.2f}",
            "payment_date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "payment_channel": "bench",
        }
    )


def build_requests(
    host: str, count: int, key: bytes, *, dup_ratio: float, seed_refs: list[bytes] | None = None
) -> list[bytes]:
    """Pre-signed raw HTTP requests. A duplicate repeats an earlier request byte for byte
    (a provider's retry); with `seed_refs`, every request is one of those."""
    now = datetime.now(UTC)
    ts = int(time.time())
    out: list[bytes] = []
    for _ in range(count):
        if seed_refs:
            out.append(random.choice(seed_refs))
            continue
        if out and random.random() < dup_ratio:
            out.append(out[random.randrange(max(0, len(out) - 5000), len(out))])
            continue
        body = payment_body(f"B-{uuid.uuid4().hex}", now)
        out.append(signed_request(host, key, body, ts))
    return out


def signed_request(host: str, key: bytes, body: bytes, ts: int) -> bytes:
    """One raw HTTP request carrying `body`, signed for the generic channel at `ts`."""
    headers = sign("standard", key, body, now=ts, delivery_id=f"msg_{uuid.uuid4().hex}")
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (
        f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{head}\r\n"
    ).encode() + body


def _parse_responses(buf: bytearray) -> list[int]:
    """Statuses of the complete responses at the front of `buf` (consumed from it)."""
    statuses: list[int] = []
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return statuses
        length = 0
        start = buf.find(b"ontent-Length:", 0, end)  # aiohttp writes "Content-Length"
        if start < 0:
            start = buf.find(b"ontent-length:", 0, end)
        if start >= 0:
            stop = buf.find(b"\r\n", start, end + 2)
            length = int(buf[start + 14 : stop])
        total = end + 4 + length
        if len(buf) < total:
            return statuses
        statuses.append(int(buf[9:12]))
        del buf[:total]


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time. A protocol rather than
    asyncio streams: the generator shares two cores with the server under test, and
    streams cost it about twice the CPU per request."""

    def __init__(self, client: _Client, retry: tuple[float, bytes] | None = None) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.current: tuple[float, bytes] | None = None
        self.sent_at = 0.0
        self.retry = retry  # the request a lost connection carried, sent once more
        self.retried = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.retry is not None:
            self.retried = True
            self.client.busy.add(self)
            self.send(self.retry)
        else:
            self.client.idle(self)

    def send(self, item: tuple[float, bytes]) -> None:
        assert self.transport is not None
        self.current = item
        self.sent_at = time.perf_counter()
        self.transport.write(item[1])

    def data_received(self, data: bytes) -> None:
        self.buf += data
        for status in _parse_responses(self.buf):
            item, self.current = self.current, None
            self.retried = False
            if item is not None:
                self.client.answered(status, item)
            self.client.idle(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.lost(self)


class _Client:
    """Hands scheduled requests to idle connections; records what comes back."""

    def __init__(self, host: str, port: int, result: Result, closed_loop: bool) -> None:
        self.host, self.port, self.result = host, port, result
        self.closed_loop = closed_loop
        self.backlog: deque[tuple[float, bytes]] = deque()
        self.free: deque[_Connection] = deque()
        self.busy: set[_Connection] = set()
        self.feed: Iterator[bytes] | None = None
        self.deadline = float("inf")
        self.stopping = False
        self.reconnects: set[asyncio.Task[object]] = set()

    async def open(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.create_connection(lambda: _Connection(self), self.host, self.port)
              for _ in range(count))
        )  # fmt: skip

    def submit(self, item: tuple[float, bytes]) -> None:
        if self.free:
            conn = self.free.popleft()
            self.busy.add(conn)
            conn.send(item)
        else:
            self.backlog.append(item)

    def idle(self, conn: _Connection) -> None:
        self.busy.discard(conn)
        if self.stopping:
            return
        if self.closed_loop and self.feed is not None:
            if time.perf_counter() - self.result.started >= self.deadline:
                self.stopping = True
                return
            raw = next(self.feed, None)
            if raw is None:
                self.stopping = True
                return
            self.result.sent += 1
            self.busy.add(conn)
            conn.send((time.perf_counter(), raw))
        elif self.backlog:
            self.busy.add(conn)
            conn.send(self.backlog.popleft())
        else:
            self.free.append(conn)

    def answered(self, status: int, item: tuple[float, bytes]) -> None:
        now = time.perf_counter()
        scheduled = item[0]
        if self.result.acks is not None and 200 <= status < 300:
            self.result.acks.append((item[1], time.time()))
        self.result.statuses[status] += 1
        self.result.latencies.append(now - scheduled)
        self.result.scheduled.append(scheduled - self.result.started)

    def lost(self, conn: _Connection) -> None:
        self.busy.discard(conn)
        with suppress(ValueError):
            self.free.remove(conn)
        item = conn.current
        if item is None or self.stopping:
            return
        if conn.retried:
            self.result.errors += 1
            item = None
        task = asyncio.ensure_future(self._reconnect(item))
        self.reconnects.add(task)
        task.add_done_callback(self.reconnects.discard)

    async def _reconnect(self, retry: tuple[float, bytes] | None) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: _Connection(self, retry), self.host, self.port)
        except OSError:
            if retry is not None:
                self.result.errors += 1

    def expire(self, grace: float) -> None:
        """Drop connections whose answer is more than `grace` seconds late."""
        now = time.perf_counter()
        for conn in list(self.busy):
            if conn.current is not None and now - conn.sent_at > grace and conn.transport:
                conn.retried = True  # a late answer is an error, not retried
                conn.transport.close()

    def close(self) -> None:
        self.stopping = True
        for conn in [*self.free, *self.busy]:
            if conn.transport is not None:
                conn.transport.close()


async def run(
    url: str,
    requests: list[bytes],
    *,
    rate: float,
    seconds: float,
    connections: int,
    track: bool = False,
) -> Result:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    result = Result(acks=[] if track else None)
    grace = 10.0
    client = _Client(host, port, result, closed_loop=rate <= 0)
    await client.open(connections)
    await asyncio.sleep(0.2)  # connections open before the clock starts
    result.started = time.perf_counter()
    if rate <= 0:
        client.deadline = seconds
        client.feed = iter(requests)
        for conn in list(client.free):
            client.free.remove(conn)
            client.idle(conn)
        while not client.stopping or client.busy:
            await asyncio.sleep(0.1)
            client.expire(grace)
    else:
        interval = 1.0 / rate
        total = min(len(requests), int(rate * seconds))
        i, next_expiry = 0, 0.0
        while i < total:
            now = time.perf_counter()
            due = min(total, int((now - result.started) / interval) + 1)
            while i < due:
                client.submit((result.started + i * interval, requests[i]))
                i += 1
            result.sent = i
            if now >= next_expiry:
                client.expire(grace)
                next_expiry = now + 0.1
            # Wake at most every millisecond and send what is due: latency still counts
            # from each request's scheduled time, and the generator leaves the CPU alone.
            await asyncio.sleep(max(0.001, result.started + i * interval - time.perf_counter()))
        while (
            client.backlog or client.busy
        ) and time.perf_counter() - result.started < seconds + grace:
            await asyncio.sleep(0.1)
            client.expire(grace)
    result.finished = time.perf_counter()
    client.close()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:3004")
    ap.add_argument("--rate", type=float, default=1000.0, help="requests/s; 0 = closed loop")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--dup-ratio", type=float, default=0.0)
    ap.add_argument("--secret-file", default=".paygate/dev-webhook-secret")
    args = ap.parse_args()
    with open(args.secret_file) as f:
        key = decode_secret("standard", f.read().strip())
    count = int(args.rate * args.seconds) if args.rate > 0 else int(30_000 * args.seconds)
    host = urlsplit(args.url).netloc
    reqs = build_requests(host, count, key, dup_ratio=args.dup_ratio)
    try:
        import uvloop

        res = uvloop.run(run(args.url, reqs, rate=args.rate, seconds=args.seconds,
                             connections=args.connections))  # fmt: skip
    except ImportError:
        res = asyncio.run(run(args.url, reqs, rate=args.rate, seconds=args.seconds,
                              connections=args.connections))  # fmt: skip
    print(orjson.dumps(res.summary(), option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
