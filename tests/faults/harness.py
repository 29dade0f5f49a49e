"""The fault-test harness: a real gateway process and a provider-like load driver.

The gateway runs as `paygate serve` / `paygate run` in its own process, so a test can
SIGKILL or SIGTERM it exactly as an orchestrator would. The driver behaves like a
payment provider: it sends signed webhooks at a bounded rate, sometimes sends the same
payment twice (a new delivery of the same event), and retries a delivery that was not
acknowledged (503, 429, a broken connection, a timeout) with the same body until it is
acknowledged or the run ends. It records every acknowledgement it saw, which is what
the checker later compares with the database and the topic.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson

from gateway.ingest.signatures import decode_secret, sign
from workers.cli.devstack import free_port

WEBHOOK_PATH = "/api/v1/payments/webhook"
ACKED = (200, 201)
CONNECTION_ERROR = -1  # a status code stand-in: no HTTP answer (refused, reset, closed)
CLIENT_TIMEOUT = -2  # a status code stand-in: no answer within the client's own deadline


# -- the gateway process ------------------------------------------------------------------


def _die_with_parent() -> None:
    """A crashed test run must not leave gateways behind (PR_SET_PDEATHSIG = 1)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


@dataclass
class GatewayProcess:
    """One `paygate <command>` child process listening on 127.0.0.1:`port`."""

    env: dict[str, str]
    log_path: Path
    command: str = "serve"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the gateway is not running"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until /health/ready answers 200 (or fail at the
        deadline with the tail of its log)."""
        env = {**self.env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"--- start #{self.starts + 1}: paygate {self.command}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "workers.cli", self.command],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        self.starts += 1
        await self.wait_ready(timeout)

    async def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                if self.proc is None or self.proc.poll() is not None:
                    raise RuntimeError(f"gateway exited during start-up:\n{self.log_tail()}")
                try:
                    async with session.get(self.url + "/health/ready") as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gateway not ready within {timeout}s:\n{self.log_tail()}")
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, whatever was in memory is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def terminate(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    async def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None if the process is still running at the deadline."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)
        return self.proc.returncode

    def rss_bytes(self) -> int:
        """Resident set size of the gateway process, from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("VmRSS missing from /proc status")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    async def stop(self, timeout: float = 15.0) -> None:
        """Teardown: SIGTERM, then SIGKILL if it does not exit in time."""
        if not self.running:
            return
        self.terminate()
        if await self.wait_exit(timeout) is None:
            self.kill()


def gateway_env(
    *,
    database_url: str,
    redis_url: str,
    kafka_bootstrap: str,
    secret: str,
    topic: str,
    data_dir: Path,
    **overrides: object,
) -> dict[str, str]:
    """Environment for a gateway child: the real URLs, a unique topic, quiet logs, the
    background workers off (a test switches on what it needs), and any overrides given
    as lower-case setting names (`shutdown_timeout_seconds=2`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYGATE_", "KAFKA_"))}
    for name in ("DATABASE_URL", "REDIS_URL", "WEBHOOK_SECRET", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    env.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA_TOPIC": topic,
            "WEBHOOK_SECRET": secret,
            "PAYGATE_DATA_DIR": str(data_dir),
            "LOG_LEVEL": "WARNING",
            "SHUTDOWN_TIMEOUT_SECONDS": "3",
            "WEBHOOK_TIMEOUT_MS": "3000",
            "DB_POOL_MIN": "2",
            "DB_POOL_MAX": "8",
            "CACHE_WARM_COUNT": "1000",
            "ENABLE_OUTBOX_RELAY": "false",
            "ENABLE_STAGING_PROCESSOR": "false",
            "ENABLE_PARTITION_MAINTENANCE": "false",
            "ENABLE_STATUS_POLLER": "false",
            "ADMIN_JWT_SECRET": "fault-tests-admin-jwt-secret-0123456789",
            # One server process (plus, for `run`, the workers process), as these
            # scenarios were written for: since issue 19 the default is one per CPU, and
            # with two, test_postgres_outage once saw a 503 in its "full service after"
            # burst (a process whose pooled connections the restart broke had not yet
            # found out). tests/workers/cli/test_dev.py runs the default shape.
            "WEB_CONCURRENCY": "1",
        }
    )
    for key, value in overrides.items():
        env[key.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


# -- what the client saw ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt that did not end in an acknowledgement (or any attempt, when traced)."""

    sent_at: float  # monotonic
    seconds: float
    status: int  # HTTP status, CONNECTION_ERROR or CLIENT_TIMEOUT
    retry_after: str | None
    error: str | None = None


@dataclass
class Ledger:
    """Everything the provider observed. Memory stays proportional to references, not
    requests, so a ten-minute soak fits: acknowledged attempts are counted, not kept."""

    acked: dict[str, str] = field(default_factory=dict)  # reference -> acknowledged payment_id
    ack_conflicts: list[tuple[str, str, str]] = field(default_factory=list)
    created: Counter[str] = field(default_factory=Counter)  # reference -> 201s seen
    first_sent: dict[str, float] = field(default_factory=dict)  # reference -> monotonic
    unacked: set[str] = field(default_factory=set)  # deliveries still unanswered at the end
    retried: set[str] = field(default_factory=set)  # references with an unacknowledged attempt
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[Outcome] = field(default_factory=list)  # every non-2xx attempt
    requests: int = 0
    deliveries: int = 0
    max_seconds: float = 0.0
    started: float = 0.0
    finished: float = 0.0  # the last new delivery was scheduled
    drained: float = 0.0  # the last retry ended
    latencies: array[float] | None = None  # acknowledged attempts' seconds, when asked for
    created_times: array[float] | None = None  # when each 201 arrived, when asked for

    def record(self, ref: str, outcome: Outcome, payment_id: str | None) -> None:
        self.requests += 1
        self.statuses[outcome.status] += 1
        self.max_seconds = max(self.max_seconds, outcome.seconds)
        if self.latencies is not None and outcome.status in ACKED:
            self.latencies.append(outcome.seconds)
        if self.created_times is not None and outcome.status == 201:
            self.created_times.append(outcome.sent_at + outcome.seconds)
        if outcome.status in ACKED and payment_id is None:
            self.ack_conflicts.append((ref, "", f"{outcome.status} without a payment_id"))
        if outcome.status not in ACKED or payment_id is None:
            self.failures.append(outcome)
            self.retried.add(ref)
            return
        if outcome.status == 201:
            self.created[ref] += 1
        known = self.acked.setdefault(ref, payment_id)
        if known != payment_id:
            self.ack_conflicts.append((ref, known, payment_id))

    def failures_between(self, start: float, end: float) -> list[Outcome]:
        return [f for f in self.failures if start <= f.sent_at <= end]

    @property
    def achieved_rate(self) -> float:
        return self.deliveries / max(1e-9, self.finished - self.started)

    def merge(self, other: Ledger) -> None:
        """Fold another client's ledger into this one (several client processes)."""
        for ref, pid in other.acked.items():
            known = self.acked.setdefault(ref, pid)
            if known != pid:
                self.ack_conflicts.append((ref, known, pid))
        self.ack_conflicts.extend(other.ack_conflicts)
        self.created.update(other.created)
        for ref, at in other.first_sent.items():
            self.first_sent[ref] = min(at, self.first_sent.get(ref, at))
        self.unacked |= other.unacked
        self.retried |= other.retried
        self.statuses.update(other.statuses)
        self.failures.extend(other.failures)
        self.requests += other.requests
        self.deliveries += other.deliveries
        self.max_seconds = max(self.max_seconds, other.max_seconds)
        self.started = min(self.started or other.started, other.started or self.started)
        self.finished = max(self.finished, other.finished)
        self.drained = max(self.drained, other.drained)
        if other.latencies is not None:
            if self.latencies is None:
                self.latencies = array("f")
            self.latencies.extend(other.latencies)


# -- the provider -------------------------------------------------------------------------


def payment_body(ref: str, now: datetime) -> bytes:
    return orjson.dumps(
        {
            "reference_number": ref,
            "loan_account_number": f"LA-{random.randrange(10**8):08d}",
            "cif": f"CIF-{random.randrange(10**6):06d}",
            "amount": f"{random.randrange(100, 10**7) / 100:.2f}",
            "payment_date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "payment_channel": "fault_test",
        }
    )


@dataclass
class LoadDriver:
    """Sends signed webhooks to `urls` (round robin) and retries like a provider.

    `rate` new deliveries per second for `seconds`; a fraction `dup_ratio` of them
    re-deliver a recent payment with an identical body (the provider sent the event
    twice). Unacknowledged attempts are retried with short jittered backoff (Retry-After
    is honoured but capped, the runs are short) until acknowledged or until `drain`
    seconds after the last new delivery. `max_outstanding` bounds the deliveries in
    progress, as a provider's sender pool would: when it is full, new deliveries wait.
    """

    urls: Sequence[str]
    secret: str
    rate: float = 300.0
    seconds: float = 6.0
    dup_ratio: float = 0.1
    drain: float = 20.0
    connections: int = 32
    max_outstanding: int = 2000
    request_timeout: float = 10.0
    retry_cap: float = 0.5
    prefix: str = field(default_factory=lambda: f"FLT-{uuid.uuid4().hex[:8]}")
    ledger: Ledger = field(default_factory=Ledger)

    def __post_init__(self) -> None:
        self.key = decode_secret("standard", self.secret)
        self._recent: list[tuple[str, bytes]] = []
        self._serial = 0
        self._give_up_at = float("inf")
        self._rr = 0

    # -- building deliveries

    def new_payment(self) -> tuple[str, bytes]:
        self._serial += 1
        ref = f"{self.prefix}-{self._serial:08d}"
        body = payment_body(ref, datetime.now(UTC))
        self._recent.append((ref, body))
        if len(self._recent) > 4096:
            del self._recent[:2048]
        return ref, body

    def next_delivery(self) -> tuple[str, bytes]:
        if self._recent and random.random() < self.dup_ratio:
            return random.choice(self._recent[-1000:])
        return self.new_payment()

    def _headers(self, body: bytes, delivery_id: str) -> dict[str, str]:
        headers = sign("standard", self.key, body, now=int(time.time()), delivery_id=delivery_id)
        headers["Content-Type"] = "application/json"
        return headers

    def _next_url(self) -> str:
        self._rr = (self._rr + 1) % len(self.urls)
        return self.urls[self._rr] + WEBHOOK_PATH

    # -- sending

    async def attempt(
        self, session: aiohttp.ClientSession, url: str, body: bytes, delivery_id: str
    ) -> tuple[Outcome, str | None]:
        sent = time.monotonic()
        try:
            async with session.post(
                url, data=body, headers=self._headers(body, delivery_id)
            ) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after = resp.headers.get("Retry-After")
        except TimeoutError:
            return Outcome(sent, time.monotonic() - sent, CLIENT_TIMEOUT, None, "timeout"), None
        except aiohttp.ClientError as exc:
            outcome = Outcome(
                sent, time.monotonic() - sent, CONNECTION_ERROR, None, type(exc).__name__
            )
            return outcome, None
        payment_id: str | None = None
        if status in ACKED:
            try:
                payment_id = str(orjson.loads(raw)["payment_id"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                payment_id = None
        return Outcome(sent, time.monotonic() - sent, status, retry_after), payment_id

    async def deliver(
        self,
        session: aiohttp.ClientSession,
        ref: str,
        body: bytes,
        url: str | None = None,
    ) -> bool:
        """One delivery of one payment, retried until acknowledged; True if it was."""
        delivery_id = f"msg_{uuid.uuid4().hex}"
        self.ledger.first_sent.setdefault(ref, time.monotonic())
        self.ledger.deliveries += 1
        tries = 0
        while True:
            outcome, payment_id = await self.attempt(
                session, url or self._next_url(), body, delivery_id
            )
            self.ledger.record(ref, outcome, payment_id)
            if outcome.status in ACKED:
                return True
            if outcome.status not in (503, 429, 500, 502, 504, CONNECTION_ERROR, CLIENT_TIMEOUT):
                return False  # a 4xx is an answer, not a reason to retry
            tries += 1
            delay = min(self.retry_cap, 0.02 * 2**tries) * random.uniform(0.5, 1.0)
            if outcome.retry_after and outcome.retry_after.isdigit():
                delay = max(delay, min(self.retry_cap, float(outcome.retry_after)))
            if time.monotonic() + delay > self._give_up_at:
                self.ledger.unacked.add(ref)
                return False
            await asyncio.sleep(delay)

    def session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self.connections, force_close=False)
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.request_timeout),
        )

    async def run(self) -> Ledger:
        """Schedule deliveries at `rate` for `seconds`, then let retries finish."""
        slots = asyncio.Semaphore(self.max_outstanding)
        tasks: set[asyncio.Task[bool]] = set()

        async def one(ref: str, body: bytes) -> bool:
            try:
                return await self.deliver(session, ref, body)
            finally:
                slots.release()

        async with self.session() as session:
            start = time.monotonic()
            self.ledger.started = start
            launched = 0
            while True:
                now = time.monotonic()
                elapsed = now - start
                if elapsed >= self.seconds:
                    break
                due = int(elapsed * self.rate) - launched
                for _ in range(max(0, due)):
                    await slots.acquire()
                    ref, body = self.next_delivery()
                    task = asyncio.create_task(one(ref, body))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    launched += 1
                await asyncio.sleep(0.005)
            self.ledger.finished = time.monotonic()
            self._give_up_at = self.ledger.finished + self.drain
            if tasks:
                await asyncio.gather(*tasks)
        self.ledger.drained = time.monotonic()
        return self.ledger

    async def storm(self, refs: int, copies: int) -> Ledger:
        """Every one of `refs` payments delivered `copies` times at once, the copies
        spread over all urls: the race the reference table must settle."""
        payments = [self.new_payment() for _ in range(refs)]
        self._give_up_at = time.monotonic() + self.seconds + self.drain
        async with self.session() as session:
            self.ledger.started = time.monotonic()
            jobs = [
                self.deliver(session, ref, body, self.urls[i % len(self.urls)] + WEBHOOK_PATH)
                for ref, body in payments
                for i in range(copies)
            ]
            await asyncio.gather(*jobs)
            self.ledger.finished = self.ledger.drained = time.monotonic()
        return self.ledger


def summarize(ledger: Ledger) -> Mapping[str, object]:
    """A short account of a run for assertion messages."""
    return {
        "deliveries": ledger.deliveries,
        "requests": ledger.requests,
        "acknowledged_refs": len(ledger.acked),
        "unacked": len(ledger.unacked),
        "statuses": dict(sorted(ledger.statuses.items())),
        "max_request_s": round(ledger.max_seconds, 3),
        "achieved_rate": round(ledger.achieved_rate, 1),
    }
