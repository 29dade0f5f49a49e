"""The disorder run: random payment histories delivered shuffled, partly twice, by
concurrent clients to several gateway processes, then checked against the lifecycle
rules as the README states them (not as paygate's code implements them).

The rules used (README, "Payment lifecycle"): `pending -> succeeded | failed`,
`succeeded -> reversed | refunded`, and a lost success lets `pending` move straight to
`reversed` or `refunded`; final states never regress; an event older (by provider time)
than the one applied is stale and ignored; a status-only event for a payment not seen
yet is kept and applied when the payment is recorded; every applied change emits one
`payment.status_changed`. Only a full payment body records a payment, with the status
it carries.

A history is one payment's lifecycle: a path through the rules with rising provider
times, each state reported once or twice (the same status again, a little later), and
sometimes a late `pending` report (a regression). Each report is a delivery: the first
state as a full body, the others as status-only bodies or the full body with the new
status. `generate` checks, by the rules below, that the final state of a history does
not depend on the order its deliveries arrive in (it simulates several orders), so
the expected final state of every payment is known whatever the network does.

The checker then asks the database: one payment per history, its final status the
expected one, nothing left parked, the applied changes of each payment (its audit log)
a chain of legal moves from the status it was recorded with to its final status, and
one `payment.status_changed` event (queued, not yet published: run with the relay off) and one
version per change.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import orjson

from gateway.db.event_log import queued_events_sql
from gateway.ingest.signatures import decode_secret, sign

WEBHOOK_PATH = "/api/v1/payments/webhook"

# The README's lifecycle, nothing else: the moves each status may make.
LEGAL: dict[str, frozenset[str]] = {
    "pending": frozenset({"succeeded", "failed", "reversed", "refunded"}),
    "succeeded": frozenset({"reversed", "refunded"}),
    "failed": frozenset(),
    "reversed": frozenset(),
    "refunded": frozenset(),
}
PATHS: tuple[tuple[str, ...], ...] = (
    ("pending", "succeeded"),
    ("pending", "failed"),
    ("pending", "succeeded", "refunded"),
    ("pending", "succeeded", "reversed"),
    ("succeeded", "refunded"),
    ("succeeded", "reversed"),
    ("pending", "refunded"),  # the success webhook was lost
)
ACKNOWLEDGED = frozenset({200, 201, 202})
RETRIED = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Event:
    """One report the provider makes about a payment."""

    reference: str
    status: str
    at: datetime  # provider time, UTC
    full: bool  # a full payment body (else status-only)


@dataclass(frozen=True, slots=True)
class Delivery:
    event: Event
    delivery_id: str
    body: bytes


@dataclass
class History:
    reference: str
    events: list[Event]
    expected: str  # the final status by the rules, whatever the arrival order


# -- the rules ------------------------------------------------------------------------------


def step(state: tuple[str, datetime], event: Event) -> tuple[str, datetime]:
    """One event applied to a recorded payment, by the README's rules."""
    status, at = state
    if event.status == status or event.at < at:  # the same status, or stale
        return state
    if event.status not in LEGAL[status]:  # a final state, or a regression
        return state
    return event.status, event.at


def final_state(arrivals: Sequence[Event]) -> str | None:
    """The status a payment ends in when its events arrive in this order: the first full
    body records it; status-only events before that wait and are applied, oldest provider
    time first, once it is recorded."""
    state: tuple[str, datetime] | None = None
    waiting: list[Event] = []
    for event in arrivals:
        if state is None:
            if not event.full:
                waiting.append(event)
                continue
            state = (event.status, event.at)
            for parked in sorted(waiting, key=lambda e: e.at):
                state = step(state, parked)
            waiting = []
        else:
            state = step(state, event)
    return None if state is None else state[0]


# -- histories ------------------------------------------------------------------------------


def _history(rng: random.Random, reference: str, start: datetime) -> History:
    path = rng.choice(PATHS)
    events: list[Event] = []
    at = start
    for n, status in enumerate(path):
        at += timedelta(seconds=rng.randint(5, 60))
        events.append(Event(reference, status, at, full=n == 0 or rng.random() < 0.2))
        if rng.random() < 0.3:  # the same status reported again, a little later
            events.append(Event(reference, status, at + timedelta(seconds=1), rng.random() < 0.2))
            at += timedelta(seconds=1)
    if len(events) < 6 and path[0] == "pending" and rng.random() < 0.3:
        late = at + timedelta(seconds=rng.randint(1, 30))  # a regression: stale by the rules
        events.append(Event(reference, "pending", late, full=False))
    events = events[:6]
    expected = final_state(events)
    assert expected is not None
    for _ in range(24):  # the expected state must not depend on the arrival order
        order = events[:]
        rng.shuffle(order)
        if not any(e.full for e in order):
            continue
        got = final_state(order)
        assert got == expected, (events, order, got, expected)
    return History(reference, events, expected)


def generate(
    seed: int, references: int, prefix: str, *, now: datetime | None = None
) -> list[History]:
    """`references` histories of 2-6 events each, from `seed`, their events' times in the
    two hours before `now` (the clock's, to the second, unless given)."""
    rng = random.Random(seed)
    start = (now or datetime.now(UTC)).replace(microsecond=0) - timedelta(hours=2)
    histories = [_history(rng, f"{prefix}-{n:05d}", start) for n in range(references)]
    return histories


def _doc(event: Event, payment_date: str) -> bytes:
    doc: dict[str, Any] = {
        "reference_number": event.reference,
        "status": event.status,
        "event_time": event.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if event.full:
        doc.update(loan_account_number="LA-D1", cif="CIF-D1", amount="42.00",
                   payment_date=payment_date)  # fmt: skip
    return orjson.dumps(doc)


def deliveries(
    histories: Sequence[History], seed: int, resend: float = 0.25, *, clustered: bool = False
) -> list[Delivery]:
    """Every event once, shuffled, and a share `resend` of them a second time (the same
    delivery: same id, same body) at another random place. `clustered`: the deliveries
    of one payment stay next to each other (shuffled among themselves), so concurrent
    clients send them at the same moment: the races between a payment and its updates."""
    rng = random.Random(seed + 1)
    payment_date = datetime.now(UTC).strftime("%Y-%m-%dT00:00:00Z")
    out = [
        Delivery(e, f"msg_{uuid.UUID(int=rng.getrandbits(128)).hex}", _doc(e, payment_date))
        for h in histories
        for e in h.events
    ]
    out += [d for d in out if rng.random() < resend]
    rng.shuffle(out)
    if clustered:
        order = {h.reference: n for n, h in enumerate(histories)}
        out.sort(key=lambda d: order[d.event.reference])  # stable: shuffled within each
    return out


# -- the clients ----------------------------------------------------------------------------


@dataclass
class Tally:
    answers: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    unacknowledged: list[Delivery] = field(default_factory=list)
    refused: list[tuple[Delivery, int, bytes]] = field(default_factory=list)


async def send_all(
    urls: Sequence[str],
    secret: str,
    todo: Sequence[Delivery],
    *,
    clients: int,
    deadline: float,
) -> Tally:
    """`clients` concurrent senders take deliveries in order, each to the next gateway;
    a 503, 429 or broken connection is retried with the same delivery (as a provider
    does) until it is acknowledged or `deadline` (monotonic) passes."""
    key = decode_secret("standard", secret)
    tally = Tally()
    queue: asyncio.Queue[Delivery] = asyncio.Queue()
    for d in todo:
        queue.put_nowait(d)

    async def one(session: aiohttp.ClientSession, n: int) -> None:
        rr = n
        while not queue.empty():
            d = queue.get_nowait()
            attempt = 0
            while True:
                rr += 1
                url = urls[rr % len(urls)] + WEBHOOK_PATH
                headers = sign("standard", key, d.body, now=int(time.time()),
                               delivery_id=d.delivery_id)  # fmt: skip
                headers["Content-Type"] = "application/json"
                try:
                    async with session.post(url, data=d.body, headers=headers) as resp:
                        status, raw = resp.status, await resp.read()
                except (aiohttp.ClientError, TimeoutError):
                    status, raw = -1, b""
                tally.answers[status] += 1
                if status in ACKNOWLEDGED:
                    tally.outcomes[str(orjson.loads(raw).get("status"))] += 1
                    break
                if status not in RETRIED and status != -1:
                    tally.refused.append((d, status, raw[:300]))
                    break
                if time.monotonic() > deadline:
                    tally.unacknowledged.append(d)
                    break
                attempt += 1
                tally.retries += 1
                await asyncio.sleep(min(0.5, 0.01 * 2**attempt))

    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=clients), timeout=timeout
    ) as session:
        await asyncio.gather(*(one(session, n) for n in range(clients)))
    return tally


# -- the check ------------------------------------------------------------------------------


@dataclass
class Verdict:
    histories: int
    missing: list[str] = field(default_factory=list)  # no payment for the history
    doubled: list[str] = field(default_factory=list)  # more than one payment row
    wrong_final: list[tuple[str, str, str]] = field(default_factory=list)  # ref, expected, got
    illegal: list[tuple[str, str, str]] = field(default_factory=list)  # ref, old, new
    broken_chain: list[str] = field(default_factory=list)  # events not from recorded to final
    version_mismatch: list[str] = field(default_factory=list)  # version, changes, events differ
    left_parked: int = 0

    @property
    def ok(self) -> bool:
        return not (
            self.missing or self.doubled or self.wrong_final or self.illegal
            or self.broken_chain or self.version_mismatch or self.left_parked
        )  # fmt: skip

    def __str__(self) -> str:
        parts = [f"{self.histories} histories"]
        for name in ("missing", "doubled", "wrong_final", "illegal", "broken_chain",
                     "version_mismatch"):  # fmt: skip
            found = getattr(self, name)
            if found:
                parts.append(f"{name}={len(found)} e.g. {found[:3]}")
        if self.left_parked:
            parts.append(f"left_parked={self.left_parked}")
        return "; ".join(parts)


_PAYMENTS = """
SELECT reference_number, status, version FROM payment_service.payments
WHERE reference_number LIKE $1
"""
# The audit log names every recording and every applied change, in the order applied
# (a payment's changes are serialised by its row lock).
_AUDIT = """
SELECT reference_number, action, details->>'status' AS recorded, details->>'old' AS old,
       details->>'new' AS new
FROM payment_service.audit_log
WHERE reference_number LIKE $1 AND action IN ('created', 'status_change') ORDER BY id
"""
_EVENTS = f"""
SELECT key, count(*) AS n FROM ({queued_events_sql()}) e
WHERE event_type = 'payment.status_changed' AND key LIKE $1 GROUP BY key
"""
_PARKED = (
    "SELECT count(*) FROM payment_service.pending_status_updates WHERE reference_number LIKE $1"
)


async def check(dsn: str, histories: Sequence[History], prefix: str) -> Verdict:
    """What the database holds for these histories, against the rules."""
    like = prefix + "-%"
    verdict = Verdict(len(histories))
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(_PAYMENTS, like)
        recorded: dict[str, list[str]] = {}
        changes: dict[str, list[tuple[str, str]]] = {}
        for r in await conn.fetch(_AUDIT, like):
            if r["action"] == "created":
                recorded.setdefault(r["reference_number"], []).append(r["recorded"])
            else:
                changes.setdefault(r["reference_number"], []).append((r["old"], r["new"]))
        events = {r["key"]: r["n"] for r in await conn.fetch(_EVENTS, like)}
        verdict.left_parked = int(await conn.fetchval(_PARKED, like))
    finally:
        await conn.close()
    found: dict[str, list[asyncpg.Record]] = {}
    for r in rows:
        found.setdefault(r["reference_number"], []).append(r)
    for h in histories:
        mine = found.get(h.reference, [])
        if not mine:
            verdict.missing.append(h.reference)
            continue
        if len(mine) > 1 or len(recorded.get(h.reference, [])) != 1:
            verdict.doubled.append(h.reference)
        row = mine[0]
        if row["status"] != h.expected:
            verdict.wrong_final.append((h.reference, h.expected, row["status"]))
        chain = changes.get(h.reference, [])
        for old, new in chain:
            if new not in LEGAL[old]:
                verdict.illegal.append((h.reference, old, new))
        links = recorded.get(h.reference, [])[:1] + [new for _, new in chain]
        if [old for old, _ in chain] != links[:-1] or links[-1:] != [row["status"]]:
            verdict.broken_chain.append(h.reference)
        if not row["version"] == 1 + len(chain) == 1 + events.get(h.reference, 0):
            verdict.version_mismatch.append(h.reference)  # one event per applied change
    return verdict
