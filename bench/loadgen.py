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
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import orjson

from gateway.signatures import decode_secret, sign

PATH = "/api/v1/payments/webhook"


@dataclass
class Result:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
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
        headers = sign("standard", key, body, now=ts, delivery_id=f"msg_{uuid.uuid4().hex}")
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        out.append(
            (
                f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n{head}\r\n"
            ).encode()
            + body
        )
    return out


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
            break
    if length:
        await reader.readexactly(length)
    return status


async def run(
    url: str,
    requests: list[bytes],
    *,
    rate: float,
    seconds: float,
    connections: int,
) -> Result:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    result = Result()
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    deadline_grace = 10.0

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                scheduled, raw = item
                if rate <= 0:
                    scheduled = time.perf_counter()
                for attempt in range(2):
                    try:
                        writer.write(raw)
                        status = await asyncio.wait_for(_read_response(reader), deadline_grace)
                        break
                    except (OSError, asyncio.IncompleteReadError, TimeoutError):
                        writer.close()
                        if attempt == 1:
                            result.errors += 1
                            status = 0
                            break
                        reader, writer = await asyncio.open_connection(host, port)
                if status:
                    result.statuses[status] += 1
                    result.latencies.append(time.perf_counter() - scheduled)
                if rate <= 0:
                    if time.perf_counter() - result.started >= seconds:
                        return
                    nxt = next(feed, None)
                    if nxt is None:
                        return
                    result.sent += 1
                    queue.put_nowait((0.0, nxt))
        finally:
            writer.close()

    feed = iter(requests)
    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    await asyncio.sleep(0.2)  # connections open before the clock starts
    result.started = time.perf_counter()
    if rate <= 0:
        for _ in range(connections):
            nxt = next(feed, None)
            if nxt is not None:
                result.sent += 1
                queue.put_nowait((0.0, nxt))
        await asyncio.gather(*workers, return_exceptions=True)
    else:
        interval = 1.0 / rate
        total = min(len(requests), int(rate * seconds))
        i = 0
        while i < total:
            now = time.perf_counter()
            due = min(total, int((now - result.started) / interval) + 1)
            while i < due:
                queue.put_nowait((result.started + i * interval, requests[i]))
                i += 1
            result.sent = i
            await asyncio.sleep(max(0.0, result.started + i * interval - time.perf_counter()))
        while not queue.empty() and time.perf_counter() - result.started < seconds + deadline_grace:
            await asyncio.sleep(0.01)
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.wait(workers, timeout=deadline_grace)
    result.finished = time.perf_counter()
    for w in workers:
        w.cancel()
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
