"""The relay: publishes the event log to Kafka, at least once, in order per key, moving a
lane's cursor only after the broker acknowledged (acks=all).

The log (sql/170, gateway.db.event_log) is append-only: rows carry the id of the
transaction that wrote them. Each lane's cursor is a snapshot `done`; a round reads, in
one statement, what is visible in a new snapshot and was not in `done` (its rows at or
past done's xmax, and the rows of transactions done saw in progress), in seq order, which
for one key is commit order (the sequence is drawn under the key's lock). So a
transaction still open when `done` was taken is picked up by the round after it commits,
and nothing the relay does holds a transaction open: there is no claim to roll back, no
row to lock, and no deleted row for a later round to walk past. The cost of a round is
what it reads, whatever old rows exist and however old the oldest open transaction is.

One round (one round trip, two when its bookkeeping has something to write):

1. Read the next page of each owned lane (up to `KAFKA_BATCH_SIZE` events a lane; an
   interval larger than that pins its target snapshot and is read page by page), and the
   retries that are due (of each key only its oldest undead outbox row). A log event
   whose key has an undead outbox row is *held*: it joins the outbox behind it.
2. Publish in waves: the first event of every key, then, once those are acknowledged, the
   second of each key whose first went through, and so on (a key rarely has two events in
   one round). So an event is sent only after its key's previous event was acknowledged.
3. Settle in one statement: acknowledged retries deleted; failed ones rescheduled with
   exponential backoff and full jitter, dead-lettered at `OUTBOX_MAX_ATTEMPTS`; failed
   and held log events moved to the outbox in their order; the lanes' cursors appended
   (at most every CURSOR_WRITE_SECONDS, and always with events moved to the outbox).
   This write is shielded from cancellation, so a stop never loses a round's bookkeeping,
   and committed without waiting for the WAL flush: a cursor lost in a crash means events
   published again, never lost.

Several relays: the lanes (a hash of the key) are shared through advisory locks
(workers.lanes); a key's events are published by one relay at a time, in order.

Dead letters: a failing event and every later event of its key wait in the outbox while
it is retried; once it is dead-lettered, its key's later events flow again, so a
consumer may see them before a replayed dead letter (the alternative, stalling the
payment until an operator acts, was judged worse; consumers already dedupe on
`event_id`, and status events carry old/new status and the provider's timestamp).

Broker outage versus poison events: when nothing in a round was acknowledged and every
failure looks transient (connection, timeout, retriable broker errors), the broker is
down, not the events bad. Then nothing is written (no attempt charged, no cursor moved:
a long outage must not dead-letter the backlog) and the relay itself backs off (capped at
a few seconds so draining starts soon after the broker returns), with a fresh producer
once it does; a fresh producer first makes sure the events topic exists (`ensure_topic`),
since a broker that lost it must not receive writes for a topic it does not know. Acks
that arrive through a producer that has since seen an outage are not trusted (they may
come from a restarted broker that dropped them with its topic): those events are sent
again, a possible duplicate instead of a possible gap. Failures specific to an event (a
non-retriable error such as a message above the size limit, or any failure in a round
where other events went through) count towards the dead-letter limit. A send whose
acknowledgement timed out is ambiguous (the broker may have written it): the event is
retried, so consumers may see a duplicate, never a gap.

Waking: the group-commit writer rings the relay's Wakeup after each commit (in `paygate
run`); a relay in its own process polls every `OUTBOX_POLL_INTERVAL_MS`. After a round
that made progress the relay goes again, at once if a lane had more than a page waiting,
else after ROUND_SPACING_SECONDS (a round costs about the same for 5 events as for 50).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from gateway.clients.kafka import create_producer, ensure_topic
from gateway.config import Settings
from gateway.db.event_log import ROUND_SQL, SESSION_SQL, SETTLE_SQL
from gateway.notify import Wakeup
from gateway.observability import metrics, tracing
from workers.backoff import backoff_delay
from workers.base import Worker
from workers.event_log_upkeep import UPKEEP_SECONDS, upkeep
from workers.lanes import Lanes, LaneState, Snapshot
from workers.plan_guard import DISCARD_SQL, PlanGuard

log = logging.getLogger(__name__)

ProducerFactory = Callable[[Settings], AIOKafkaProducer]
LagObserver = Callable[[float], None]

OUTAGE_BACKOFF_CAP_SECONDS = 5.0
ERROR_TEXT_MAX = 300
RETRY_WINDOW = 4  # outbox rows looked at per round, per event of the batch size
LANE_CHECK_SECONDS = 2.0  # how often a relay counts its peers and re-balances lanes
CURSOR_WRITE_SECONDS = 1.0  # a lane's cursor is written at most this often (see _settle)
# A round costs Postgres ~0.6 ms whatever it carries (cursors, the lanes' index probes) on
# top of ~14 µs an event: at 4,000 events/s, rounds 10 ms apart paid ~15 µs an event of
# that fixed part and rounds 20 ms apart pay ~8, for ~10 ms more publish lag (RESULTS).
ROUND_SPACING_SECONDS = 0.02


class PaymentMissing(Exception):
    """A `payment.recorded` event whose payment row is gone (a partition dropped before
    the event was published): nothing to build the payload from. Retried, then
    dead-lettered like any event-specific failure."""

    def __str__(self) -> str:
        return "the payment of this event is no longer in payments"


def describe_error(exc: BaseException) -> str:
    """A short, secret-free description for `last_error`: the class and the message."""
    name = type(exc).__name__
    # aiokafka repeats the class in its messages: "[Error 10] MessageSizeTooLargeError: ..."
    text = re.sub(rf"^(\[Error -?\d+\] )?{re.escape(name)}:?\s*", "", str(exc).strip())
    short = f"{name}: {text}" if text else name
    return short[:ERROR_TEXT_MAX]


def is_transient(exc: BaseException) -> bool:
    """Errors that say "the broker is unreachable or slow", not "this event is bad"."""
    if isinstance(exc, TimeoutError | KafkaTimeoutError):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


@dataclass(slots=True)
class Event:
    """One event of a round: from the log, or a retry from the outbox."""

    n: int  # its place in the round
    lane: int
    key: str
    event_id: Any
    event_type: str
    topic: str
    payload: bytes | None
    created_at: datetime
    payment_id: Any = None
    payment_date: Any = None
    status: str | None = None
    seq: int = 0
    idx: int = 0
    outbox_id: int | None = None  # a retry
    attempts: int = 0
    held: bool = False  # a log event queued behind an undead outbox row of its key
    traceparent: str | None = None  # the recording's trace context (tracing on), for Kafka


class LaneRead(NamedTuple):
    """Where one read left a lane (LaneState.advance's arguments)."""

    target: Snapshot
    complete: bool  # the interval (done, target] is all read
    last_seq: int | None  # the last seq taken, if any
    seq_hi: int | None  # the interval's largest seq, from its first page


@dataclass
class RoundPlan:
    """What one read returned: each lane's new position, and the events in order."""

    lanes: dict[int, LaneRead] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    now: Snapshot | None = None  # the read's own snapshot

    @classmethod
    def from_rows(cls, rows: Iterable[asyncpg.Record]) -> RoundPlan:
        plan = cls()
        retries: list[Event] = []
        logged: list[Event] = []
        for r in rows:
            if r["kind"] == "lane":
                plan.lanes[r["lane"]] = LaneRead(
                    r["target"], r["complete"], r["last_seq"], r["seq_hi"]
                )
                plan.now = r["now"]
                continue
            event = Event(
                0, r["lane"], r["key"], r["event_id"], r["event_type"], r["topic"],
                r["payload"], r["created_at"], r["payment_id"], r["payment_date"],
                r["status"], r["seq"] or 0, r["idx"] or 0, r["outbox_id"], r["attempts"],
                r["held"], r["traceparent"],
            )  # fmt: skip
            (retries if event.outbox_id is not None else logged).append(event)
        logged.sort(key=lambda e: (e.seq, e.idx))
        plan.events = retries + logged  # a key's retry is older than its log events
        for n, event in enumerate(plan.events):
            event.n = n
        return plan

    def waves(self) -> list[list[Event]]:
        """The events to publish, the k-th event of each key in wave k."""
        waves: list[list[Event]] = []
        seen: dict[str, int] = {}
        for event in self.events:
            if event.held:
                continue
            k = seen.get(event.key, 0)
            seen[event.key] = k + 1
            if k == len(waves):
                waves.append([])
            waves[k].append(event)
        return waves


@dataclass
class RoundResult:
    """What the broker said about one round's events (by their place in the round)."""

    acked: dict[int, float] = field(default_factory=dict)  # event -> wall-clock ack time
    failed: dict[int, BaseException] = field(default_factory=dict)
    stuck: bool = False  # some sends never resolved before the deadline

    def merge(self, other: RoundResult) -> None:
        self.acked.update(other.acked)
        self.failed.update(other.failed)
        self.stuck = self.stuck or other.stuck

    def distrust_acks(self) -> None:
        """Acks through a producer that has since seen the broker unreachable may come from a
        restarted broker that lost the topic (the embedded one keeps its log in memory):
        retry those events. A duplicate on the topic is allowed, a gap is not."""
        for n in self.acked:
            self.failed[n] = KafkaConnectionError(
                "acknowledged through a producer that saw an outage"
            )
        self.acked.clear()

    @property
    def outage(self) -> bool:
        return (
            not self.acked
            and bool(self.failed)
            and all(is_transient(e) for e in self.failed.values())
        )


class OutboxRelay(Worker):
    name = "outbox"

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        wakeup: Wakeup | None = None,
        *,
        producer_factory: ProducerFactory = create_producer,
        lane_check_seconds: float = LANE_CHECK_SECONDS,
    ) -> None:
        super().__init__(settings.outbox_poll_interval_ms / 1000, wakeup)
        self.pool = pool
        self.settings = settings
        self.batch_size = settings.kafka_batch_size
        self.max_attempts = settings.outbox_max_attempts
        self.backoff_base = settings.outbox_backoff_base_ms / 1000
        self.backoff_cap = settings.outbox_backoff_max_seconds
        # Sends and acks each get the producer's own request timeout plus a margin:
        # by then aiokafka has expired the batch, so waiting longer buys nothing.
        self.publish_timeout = settings.kafka_request_timeout_ms / 1000 + 1.0
        self.lag_observers: list[LagObserver] = []
        self.lanes = Lanes(lane_check_seconds)
        self._producer_factory = producer_factory
        self._producer: AIOKafkaProducer | None = None
        self._conn: asyncpg.Connection | None = None
        self._outages = 0
        self._retry_at = 0.0
        self._recycle = False
        self._next_round_at = 0.0
        self._upkeep_at = 0.0
        self._plan_guard = PlanGuard()
        # Producers are numbered; acks through one numbered at or below the last that saw
        # an outage are not trusted (RoundResult.distrust_acks).
        self._generation = 0
        self._outage_generation = 0

    @property
    def kafka_unavailable(self) -> bool:
        """True from a failed round or producer start until the next good round."""
        return self._outages > 0

    # -- producer lifecycle -------------------------------------------------------------

    async def _ready_producer(self) -> AIOKafkaProducer | None:
        """The started producer, started lazily; None while the broker is unreachable. A
        start that fails is retried on a later round, never crashes the worker."""
        if self._recycle:
            # Marked stale (an outage, stuck sends): start afresh.
            self._recycle = False
            await self._drop_producer()
        if self._producer is None:
            if time.monotonic() < self._retry_at:
                return None
            producer = self._producer_factory(self.settings)
            try:
                await asyncio.wait_for(producer.start(), self.publish_timeout)
            except Exception as exc:
                await _close_quietly(producer)
                self._note_outage(exc)
                return None
            await self._ensure_topic()
            self._producer = producer
            self._generation += 1
        return self._producer

    async def _ensure_topic(self) -> None:
        """Before the first publish of a fresh producer, make sure the events topic exists:
        a broker that lost it (the embedded one keeps its log in memory) gets it back
        before anything is written to it. A cluster that forbids creating topics only
        costs a warning here."""
        try:
            await ensure_topic(self.settings, timeout=self.publish_timeout)
        except Exception as exc:
            log.warning("could not check the events topic: %s", describe_error(exc))

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _close_quietly(producer)

    def _note_outage(self, exc: BaseException) -> None:
        self._outages += 1
        delay = backoff_delay(
            self._outages, self.backoff_base, min(self.backoff_cap, OUTAGE_BACKOFF_CAP_SECONDS)
        )
        self._retry_at = time.monotonic() + delay
        level = logging.WARNING if self._outages == 1 else logging.DEBUG
        log.log(level, "kafka unavailable (%s); outbox relay retrying", describe_error(exc))

    def _note_healthy(self) -> None:
        if self._outages:
            log.info("kafka reachable again; outbox relay draining")
        self._outages = 0
        self._retry_at = 0.0

    # -- the relay's connection: its lanes' locks and every statement --------------------

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None:
            conn = await self.pool.acquire()
            try:
                await conn.execute(SESSION_SQL)
            except BaseException:
                await self.pool.release(conn)
                raise
            self._conn = conn
        return self._conn

    async def _lose_connection(self) -> None:
        """A broken connection (server restart, cut backend) has lost its locks, and asyncpg
        may not be able to reset it: drop it; lanes are taken again on the next one."""
        conn, self._conn = self._conn, None
        self.lanes.forget()
        if conn is not None:
            conn.terminate()
            await self.pool.release(conn)

    async def on_stop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await self._write_cursors(conn, self.lanes.held.values(), force=True)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                log.debug("cursors not written at stop: %s", describe_error(exc))
            self.lanes.forget()
            await self.pool.release(conn)  # its reset unlocks the lanes
        await self._drop_producer()

    async def _write_cursors(
        self, conn: asyncpg.Connection, states: Iterable[LaneState], *, force: bool = False
    ) -> None:
        states = [s for s in states if s.dirty or force]
        if states:
            await conn.execute(SETTLE_SQL, *_no_outbox_change(), *_cursor_columns(states),
                               self._relay_name)  # fmt: skip
            _written(states)

    @property
    def _relay_name(self) -> str:
        return f"{self.settings.kafka_client_id}:{id(self):x}"

    # -- one round ----------------------------------------------------------------------

    async def run_once(self) -> bool:
        await self._space_rounds()
        if time.monotonic() < self._retry_at:
            return False
        producer = await self._ready_producer()
        if producer is None:
            return False
        conn = await self._connection()
        try:
            return await self._round(conn, producer, self._generation)
        except (asyncpg.InternalClientError, asyncpg.InterfaceError, OSError):
            await self._lose_connection()
            raise

    async def _space_rounds(self) -> None:
        """Without a backlog, rounds start at least ROUND_SPACING_SECONDS apart: a round
        costs Postgres about the same for 5 events as for 50, so at a few thousand events
        a second rounds woken by every commit would be mostly overhead. With a backlog
        they go back to back."""
        now = time.monotonic()
        start = max(now, self._next_round_at)
        self._next_round_at = start + ROUND_SPACING_SECONDS
        if start > now:
            await asyncio.sleep(start - now)

    async def _round(
        self, conn: asyncpg.Connection, producer: AIOKafkaProducer, generation: int
    ) -> bool:
        await self.lanes.rebalance(conn, self._write_cursors)
        if 0 in self.lanes.held and time.monotonic() >= self._upkeep_at:
            self._upkeep_at = time.monotonic() + UPKEEP_SECONDS
            await upkeep(conn)
        states = [self.lanes.held[lane] for lane in sorted(self.lanes.held)]
        if not states:
            return False
        started = time.monotonic()
        rows = await conn.fetch(
            ROUND_SQL, [s.lane for s in states], [s.done for s in states],
            [s.next_target() for s in states], [s.after_seq for s in states], self.batch_size,
            self.batch_size, RETRY_WINDOW * self.batch_size, [s.seq_hi for s in states],
        )  # fmt: skip
        plan = RoundPlan.from_rows(rows)
        read_at = time.monotonic()
        took = read_at - started
        if self._plan_guard.should_discard(took, len(plan.events), read_at):
            log.warning(
                "the relay's read took %.2f s for %d events: its cached plans are dropped"
                " (workers/plan_guard.py)", took, len(plan.events),
            )  # fmt: skip
            await conn.execute(DISCARD_SQL)
        if not plan.events:
            self._advance(plan)
            await self._write_cursors(conn, states)  # idle: where every lane stands
            self._note_healthy()
            return not all(read.complete for read in plan.lanes.values())
        traces = (tracing.parse(e.traceparent) for e in plan.events)
        with tracing.linked_span(
            "paygate.relay.round", traces, **{"paygate.relay.events": len(plan.events)}
        ):
            result, unsent = await self._publish_waves(producer, plan)
        if result.acked and generation <= self._outage_generation:
            result.distrust_acks()
        self._account(plan, result)
        if result.stuck:
            # Batches still queued in the producer would be delivered late, after their
            # retry: start afresh rather than let them linger.
            self._recycle = True
        if result.outage:
            # Nothing moves. A fresh producer after the outage: nothing of this one's
            # lingers to be retried into a broker that came back without its topic.
            self._remember(plan)
            self._recycle = True
            self._outage_generation = max(self._outage_generation, generation)
            self._note_outage(next(iter(result.failed.values())))
            return False
        self._advance(plan)
        await _uncancellable(self._settle(conn, plan, result, unsent))
        self._note_healthy()
        if not all(read.complete for read in plan.lanes.values()):
            self._next_round_at = 0.0  # a backlog: the next page at once, no spacing
        return True

    def _remember(self, plan: RoundPlan) -> None:
        for lane in plan.lanes:
            state = self.lanes.held.get(lane)
            if state is not None and plan.now is not None:
                state.remember(plan.now)

    def _advance(self, plan: RoundPlan) -> None:
        for lane, read in plan.lanes.items():
            state = self.lanes.held.get(lane)
            if state is not None:
                state.advance(*read)

    async def _publish_waves(
        self, producer: AIOKafkaProducer, plan: RoundPlan
    ) -> tuple[RoundResult, list[Event]]:
        """Publish wave after wave; an event whose key's earlier event failed (or was not
        sent) is not sent, and comes back in `unsent` to be queued behind it."""
        result = RoundResult()
        blocked: set[str] = set()
        unsent: list[Event] = []
        stopped = False
        for wave in plan.waves():
            todo = [e for e in wave if e.key not in blocked and not stopped]
            unsent += [e for e in wave if e.key in blocked or stopped]
            if not todo:
                continue
            outcome = await self._publish(producer, todo)
            result.merge(outcome)
            blocked.update(e.key for e in todo if e.n in outcome.failed)
            stopped = outcome.outage or outcome.stuck
        return result, unsent

    async def _publish(self, producer: AIOKafkaProducer, events: Sequence[Event]) -> RoundResult:
        result = RoundResult()
        loop = asyncio.get_running_loop()
        futures: dict[asyncio.Future[Any], int] = {}
        ack_times: dict[int, float] = {}

        def stamp(n: int) -> Callable[[asyncio.Future[Any]], None]:
            def done(fut: asyncio.Future[Any]) -> None:
                ack_times.setdefault(n, time.time())

            return done

        deadline = loop.time() + self.publish_timeout
        try:
            async with asyncio.timeout_at(deadline):
                for event in events:
                    if event.payload is None:
                        result.failed[event.n] = PaymentMissing()
                        continue
                    try:
                        fut = await producer.send(
                            event.topic,
                            bytes(event.payload),
                            key=event.key.encode(),
                            headers=[
                                ("event_id", str(event.event_id).encode()),
                                ("event_type", event.event_type.encode()),
                                *tracing.kafka_headers(event.traceparent),
                            ],
                        )
                    except Exception as exc:
                        result.failed[event.n] = exc
                        continue
                    fut.add_done_callback(stamp(event.n))
                    futures[fut] = event.n
        except TimeoutError:
            pass
        sent = set(futures.values())
        for event in events:
            if event.n not in result.failed and event.n not in sent:
                result.failed[event.n] = KafkaTimeoutError("send timed out")
        if not futures:
            return result
        remaining = max(deadline - loop.time(), 0.0) + self.publish_timeout
        done, pending = await asyncio.wait(futures, timeout=remaining)
        # Decided here, once: a late callback must not change what the round settles.
        for fut in done:
            n = futures[fut]
            error = KafkaTimeoutError("send cancelled") if fut.cancelled() else fut.exception()
            if error is None:
                result.acked[n] = ack_times.get(n, time.time())
            else:
                result.failed[n] = error
        for fut in pending:
            fut.add_done_callback(_swallow)
            result.failed[futures[fut]] = KafkaTimeoutError("no acknowledgement in time")
            result.stuck = True
        return result

    async def _settle(
        self,
        conn: asyncpg.Connection,
        plan: RoundPlan,
        result: RoundResult,
        unsent: Sequence[Event],
    ) -> None:
        """Acknowledged retries deleted, failed ones rescheduled or dead-lettered; failed,
        held and unsent log events into the outbox in their order; cursors appended."""
        acked_ids: list[int] = []
        failed: list[list[Any]] = [[] for _ in range(5)]
        moved: list[list[Any]] = [[] for _ in range(14)]
        unsent_ns = {e.n for e in unsent}
        moved_ns: set[int] = set()
        for event in plan.events:
            error = result.failed.get(event.n)
            if event.outbox_id is not None:
                if event.n in result.acked:
                    acked_ids.append(event.outbox_id)
                elif error is not None:
                    n = event.attempts + 1
                    values = [event.outbox_id, n, self._delay(n), describe_error(error),
                              n >= self.max_attempts]  # fmt: skip
                    for column, value in zip(failed, values, strict=True):
                        column.append(value)
                continue
            if error is not None:
                n, delay, text = 1, self._delay(1), describe_error(error)
                dead = self.max_attempts <= 1
            elif event.held or event.n in unsent_ns:
                n, delay, text, dead = 0, 0.0, None, False
            else:
                continue
            moved_ns.add(event.n)
            values = [
                event.event_id, event.event_type, event.topic, event.key, event.payload,
                event.payment_id, event.payment_date, event.status, event.created_at,
                event.traceparent, n, delay, text, dead,
            ]  # fmt: skip
            for column, value in zip(moved, values, strict=True):
                column.append(value)
        # A lane whose events went to the outbox writes its cursor in the same statement
        # (else a crash would put them there twice); the others at most every
        # CURSOR_WRITE_SECONDS: a cursor lost in a crash costs events published again.
        moved_lanes = {e.lane for e in plan.events if e.outbox_id is None and e.n in moved_ns}
        states = [
            s for s in self.lanes.held.values() if s.dirty and (s.lane in moved_lanes or _due(s))
        ]
        if not (acked_ids or failed[0] or moved[0] or states):
            return  # every event went through; the cursors are written later
        await conn.execute(SETTLE_SQL, acked_ids, *failed, *moved, *_cursor_columns(states),
                           self._relay_name)  # fmt: skip
        _written(states)

    def _delay(self, attempt: int) -> float:
        return backoff_delay(attempt, self.backoff_base, self.backoff_cap)

    def _account(self, plan: RoundPlan, result: RoundResult) -> None:
        if result.outage:
            metrics.kafka_publish.labels("error").inc(len(result.failed))
            return
        for n, acked_at in result.acked.items():
            lag = max(acked_at - plan.events[n].created_at.timestamp(), 0.0)
            metrics.outbox_lag.observe(lag)
            for observe in self.lag_observers:
                observe(lag)
        if result.acked:
            metrics.kafka_publish.labels("ok").inc(len(result.acked))
        dead = 0
        for n, exc in result.failed.items():
            event = plan.events[n]
            if event.attempts + 1 >= self.max_attempts:
                dead += 1
                log.error(
                    "event dead-lettered after %d attempts: event_id=%s type=%s (%s)",
                    event.attempts + 1, event.event_id, event.event_type, describe_error(exc),
                )  # fmt: skip
            else:
                log.info("event %s will be retried: %s", event.event_id, describe_error(exc))
        if dead:
            metrics.kafka_publish.labels("dead_letter").inc(dead)
        if len(result.failed) > dead:
            metrics.kafka_publish.labels("retry").inc(len(result.failed) - dead)


def _due(state: LaneState) -> bool:
    return state.dirty and time.monotonic() - state.persisted_at >= CURSOR_WRITE_SECONDS


def _cursor_columns(states: Sequence[LaneState]) -> list[list[Any]]:
    return [
        [s.lane for s in states],
        [s.done for s in states],
        [s.target for s in states],
        [s.after_seq for s in states],
    ]


def _written(states: Iterable[LaneState]) -> None:
    now = time.monotonic()
    for s in states:
        s.dirty = False
        s.persisted_at = now


def _no_outbox_change() -> list[list[Any]]:
    return [[] for _ in range(1 + 5 + 14)]


def _swallow(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


async def _uncancellable(coro: Awaitable[None]) -> None:
    """Run `coro` to the end even if the caller is cancelled, then re-raise the
    cancellation: the round's bookkeeping must land once the broker has the events."""
    task = asyncio.ensure_future(coro)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        raise


async def _close_quietly(producer: AIOKafkaProducer, timeout: float = 5.0) -> None:
    try:
        await asyncio.wait_for(producer.stop(), timeout)
    except Exception as exc:
        log.debug("kafka producer did not close cleanly: %s", describe_error(exc))
