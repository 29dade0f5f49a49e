"""The outbox relay: publishes committed outbox rows to Kafka, at least once, in order
per key, and deletes each row only after the broker acknowledged it (acks=all).

One round, in one transaction, three round trips when all goes well (BEGIN, the claim,
COMMIT):

1. Claim and delete up to `KAFKA_BATCH_SIZE` due rows in id order, in one statement
   (`DELETE ... USING` the rows picked `FOR UPDATE SKIP LOCKED`, `RETURNING` them).
   A row is claimable only when no older undead row of the same key exists (whether
   that one is rescheduled after a failure, locked by another relay, or simply older):
   so a claim holds at most one row per key, the oldest, and the events of a key are
   published strictly one after the other, each only after its predecessor was acked.
   This is what makes several relays safe together: the row locks keep two relays
   from publishing the same row, and the per-key rule keeps them from reordering a key.
   The cost is one round per event of a key with a backlog; payments have a handful.
   Each row comes with its payload: stored, or for a lean `payment.recorded` row
   (sql/060) built by Postgres from the payment, looked up by id and payment_date so
   the lookup touches one partition (gateway.db.events_sql).
2. Send every claimed row (bounded by a deadline: `send()` can wait on a full buffer),
   then wait for the acknowledgements, again under a deadline.
3. Put the failed rows back (same id, so the same place in their key's order) with the
   attempt counted and exponential backoff with full jitter, or dead-lettered at
   `OUTBOX_MAX_ATTEMPTS`; commit, which makes the acknowledged rows' deletion final. This
   write is shielded from cancellation, so a stop never loses a round's bookkeeping. A
   crash or a cut connection before the commit is a rollback: every claimed row is back
   as it was, and is published again (at least once, never lost).

A round that made progress keeps its connection for the next round (a pool release
costs a reset query); an idle relay hands it back.

Waking: the group-commit writer rings the relay's Wakeup after each commit (in
`paygate run`); a relay in its own process polls every `OUTBOX_POLL_INTERVAL_MS`.
After a round that made progress the relay goes again at once. Two rounds run at once
per relay (each on its own connection, sharing one producer) so that what commits
while one round waits for the broker is claimed by the other straight away.

Broker outage versus poison rows: when nothing in a round was acknowledged and every
failure looks transient (connection, timeout, retriable broker errors), the broker is
down, not the rows bad. Then no row is charged an attempt (a long outage must not
dead-letter the whole backlog); the round rolls back and the relay itself backs off
(capped at a few seconds so draining starts soon after the broker returns), with a
fresh producer once it does; a fresh producer first makes sure the events topic
exists (`ensure_topic`), since a broker that lost it must not receive writes for a
topic it does not know. No new round starts on the old producer meanwhile, and acks
that still arrive through it after the outage are not trusted (they may come from a
restarted broker that dropped them with its topic): those rows are sent again, a
possible duplicate instead of a possible gap. A producer that cannot start is retried
the same way. Failures
that are specific to a row (a non-retriable error such as a message above the size
limit, or any failure in a round where other rows went through) count towards the
dead-letter limit. Consequence: a row whose only failure mode is a transient-looking
error while it is alone in its round is retried until it goes through, not
dead-lettered.

Dead letters no longer block their key: later events of that payment keep flowing, so
a consumer can see them before a replayed dead letter. The alternative, stalling every
later event of the payment until an operator acts, was judged worse; consumers already
have to cope with redeliveries (dedupe on `event_id`) and status events carry
old/new status and the provider's timestamp.

A send whose acknowledgement timed out is ambiguous (the broker may have written it):
the row stays and is retried, so consumers may see a duplicate, never a gap.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from gateway.clients.kafka import create_producer, ensure_topic
from gateway.config import Settings
from gateway.db.events_sql import outbox_payload_sql
from gateway.notify import Wakeup
from gateway.observability import metrics, tracing
from workers.backoff import backoff_delay
from workers.base import Worker

log = logging.getLogger(__name__)

ProducerFactory = Callable[[Settings], AIOKafkaProducer]
LagObserver = Callable[[float], None]

OUTAGE_BACKOFF_CAP_SECONDS = 5.0
ERROR_TEXT_MAX = 300

# The oldest due rows first, and of each key only its oldest undead row (per-key order).
#
# Written so that no plan depends on the outbox's statistics. The outbox is nearly empty
# whenever (auto)vacuum or analyze look at it, so they describe an empty table; with a
# backlog, a claim that joined the outbox to itself (the candidates back to their rows,
# and an anti-join for "an older row of the same key exists") was planned as nested
# loops whose inner side scanned a whole index once per candidate with a join filter:
# 1.1 s for one claim at 1,000 queued rows, quadratic in the rows queued, so a relay
# that fell behind spent ever more of the CPU it needed to catch up. Here every access
# is one index scan with its own condition:
#
# 1. `window`: the first `$2` undead rows in id order (idx_outbox_pending, and only it:
#    the round's transaction turns sequential and bitmap scans off), due or not. A row's
#    older rows of the same key all have smaller ids, so they are in the window too:
#    "no older undead row of its key" is "first of its key in the window", a window
#    function over at most `$2` rows instead of a probe per candidate.
# 2. `locked`: of those, the due rows first of their key, locked with SKIP LOCKED (rows
#    another relay holds are skipped, and the rows behind them in their key stay behind:
#    the held row is in this window too), up to `$1`.
# 3. Claim and delete in one statement: the rows are deleted inside the round's
#    transaction, which stays open while the broker is asked, so they are gone only if it
#    commits (after every acknowledgement); a rollback puts them back untouched, and a
#    crash or a cut connection is a rollback. One statement and one round trip fewer than
#    a separate claim, and each row written once (deleted) instead of twice (locked, then
#    deleted).
#
# A window whose due rows are all held back behind rows in backoff claims nothing; the
# rows in backoff come due (OUTBOX_BACKOFF_MAX_SECONDS at most) or are dead-lettered, and
# the rounds move on: a delay for the rows behind them, never a loss or a reordering.
_CLAIM = f"""
WITH win AS MATERIALIZED (
    SELECT id, next_attempt_at <= now() AS due,
           row_number() OVER (PARTITION BY key ORDER BY id) AS nth
    FROM (
        SELECT id, key, next_attempt_at FROM payment_service.outbox
        WHERE dead_lettered_at IS NULL
        ORDER BY id
        LIMIT $2
    ) prefix
), locked AS MATERIALIZED (
    SELECT o.id FROM payment_service.outbox o
    WHERE o.id = ANY (ARRAY(SELECT id FROM win WHERE due AND nth = 1))
      -- re-checked on the locked row. Not dead_lettered_at: a row is dead-lettered only by
      -- the relay that claimed (deleted) it, and naming the column would let the planner
      -- read a whole partial index instead of probing the primary key with the ids.
      AND o.next_attempt_at <= now()
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
DELETE FROM payment_service.outbox o
WHERE o.id = ANY (ARRAY(SELECT id FROM locked))
RETURNING o.id, o.event_id, o.event_type, o.topic, o.key, {outbox_payload_sql()} AS payload,
          o.payload AS stored, o.payment_id, o.payment_date, o.status, o.attempts,
          o.created_at, o.traceparent
"""

# Window rows per claimed row: room for other relays' locked rows, for rows in backoff and
# for rows held back behind an older event of their key.
CLAIM_WINDOW = 4

# A failed row goes back, in the same transaction, as it was (its id, so its place in its
# key's order; its lean columns or stored payload) with the attempt counted.
_RESCHEDULE = """
INSERT INTO payment_service.outbox
    (id, event_id, event_type, topic, key, payload, payment_id, payment_date, status,
     created_at, traceparent, attempts, next_attempt_at, last_error, dead_lettered_at)
SELECT u.id, u.event_id, u.event_type, u.topic, u.key, u.payload, u.payment_id,
       u.payment_date, u.status, u.created_at, u.traceparent, u.attempts,
       now() + make_interval(secs => u.delay), u.error, CASE WHEN u.dead THEN now() END
FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::bytea[],
            $7::uuid[], $8::timestamp[], $9::text[], $10::timestamptz[], $11::text[],
            $12::int[], $13::float8[], $14::text[], $15::bool[])
    AS u(id, event_id, event_type, topic, key, payload, payment_id, payment_date, status,
         created_at, traceparent, attempts, delay, error, dead)
"""
_RESCHEDULED_COLUMNS = (
    "id", "event_id", "event_type", "topic", "key", "stored", "payment_id", "payment_date",
    "status", "created_at", "traceparent",
)  # fmt: skip


class PaymentMissing(Exception):
    """A lean `payment.recorded` row whose payment row is gone (a partition dropped
    before the event was published): nothing to build the payload from. Retried, then
    dead-lettered like any row-specific failure."""

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
    """Errors that say "the broker is unreachable or slow", not "this row is bad"."""
    if isinstance(exc, TimeoutError | KafkaTimeoutError):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


@dataclass
class RoundResult:
    """What the broker said about one claimed batch."""

    acked: dict[int, float] = field(default_factory=dict)  # row id -> wall-clock ack time
    failed: dict[int, BaseException] = field(default_factory=dict)
    stuck: bool = False  # some sends never resolved before the deadline

    def distrust_acks(self) -> None:
        """Acks through a producer that has since seen the broker unreachable may come from a
        restarted broker that lost the topic (the embedded one keeps its log in memory):
        retry those rows. A duplicate on the topic is allowed, a gap is not."""
        for row_id in self.acked:
            self.failed[row_id] = KafkaConnectionError(
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
        concurrency: int = 2,
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
        self._producer_factory = producer_factory
        self._producer: AIOKafkaProducer | None = None
        self._outages = 0
        self._retry_at = 0.0
        # Rounds in flight at once, each on its own connection: while one waits for the
        # broker, another claims what was committed meanwhile. They are as safe together
        # as separate relays (row locks, the per-key rule) and share one producer.
        self.concurrency = max(1, concurrency)
        self._in_flight = 0
        self._recycle = False
        self._producer_lock = asyncio.Lock()
        self._held: list[asyncpg.Connection] = []  # connections kept between busy rounds
        self._next_round_at = 0.0
        # Producers are numbered; acks through one numbered at or below the last that saw
        # an outage are not trusted (RoundResult.distrust_acks).
        self._generation = 0
        self._outage_generation = 0

    @property
    def kafka_unavailable(self) -> bool:
        """True from a failed round or producer start until the next good round."""
        return self._outages > 0

    async def _loop(self) -> None:
        if self.concurrency == 1:
            await super()._loop()
            return
        await asyncio.gather(*[Worker._loop(self) for _ in range(self.concurrency)])

    # -- producer lifecycle -------------------------------------------------------------

    async def _ready_producer(self) -> AIOKafkaProducer | None:
        """The started producer, started lazily, counted as in use by one more round;
        None while the broker is unreachable. A start that fails is retried on a later
        round, never crashes the worker."""
        async with self._producer_lock:
            if self._recycle:
                if self._in_flight:
                    # Marked stale (an outage, stuck sends): no new round on it; the fresh
                    # producer waits until the rounds still on this one have settled.
                    return None
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
            self._in_flight += 1
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

    async def on_stop(self) -> None:
        held, self._held = self._held, []
        for conn in held:
            await self.pool.release(conn)
        await self._drop_producer()

    # -- one round ----------------------------------------------------------------------

    async def run_once(self) -> bool:
        await self._space_rounds()
        if time.monotonic() < self._retry_at:
            return False
        producer = await self._ready_producer()
        if producer is None:
            return False
        generation = self._generation  # no await since _ready_producer: it is this one's
        try:
            return await self._round(producer, generation)
        finally:
            self._in_flight -= 1

    async def _space_rounds(self) -> None:
        """Without a backlog, rounds of one relay start at least ROUND_SPACING_SECONDS /
        concurrency apart: a round costs Postgres about the same for 5 rows as for 50
        (BEGIN, the claim, COMMIT and its WAL flush), so at a few thousand events a second
        rounds woken by every commit were mostly overhead. With a backlog (a full claim)
        they go back to back."""
        now = time.monotonic()
        start = max(now, self._next_round_at)
        self._next_round_at = start + ROUND_SPACING_SECONDS / self.concurrency
        if start > now:
            await asyncio.sleep(start - now)

    async def _round(self, producer: AIOKafkaProducer, generation: int) -> bool:
        # A round that made progress keeps its connection for the next one: handing it
        # back to the pool costs a reset query each time. Idle, it goes back.
        conn = self._held.pop() if self._held else await self.pool.acquire()
        keep = False
        try:
            tx = _RoundTransaction(conn)
            await tx.start()
            committed = False
            try:
                rows = await conn.fetch(_CLAIM, self.batch_size, CLAIM_WINDOW * self.batch_size)
                if not rows:
                    await tx.commit()
                    committed = True
                    self._note_healthy()  # the producer started: the broker answers
                    return False
                traces = (tracing.parse(row["traceparent"]) for row in rows)
                events = {"paygate.relay.events": len(rows)}
                with tracing.linked_span("paygate.relay.round", traces, **events):
                    result = await self._publish(producer, rows)
                if result.acked and generation <= self._outage_generation:
                    result.distrust_acks()
                if result.outage:
                    await tx.rollback()  # the claimed rows are back, untouched
                    committed = True
                else:
                    await _uncancellable(self._settle(conn, tx, rows, result))
                    committed = True
                    keep = True
                if len(rows) >= self.batch_size:  # a backlog (also during an outage)
                    self._next_round_at = 0.0  # no spacing
            except (asyncpg.InternalClientError, asyncpg.InterfaceError):
                # A connection broken mid-protocol (server restart, cut backend) can be left
                # in a state asyncpg cannot reset: drop it instead of returning it to the pool.
                committed = True
                conn.terminate()
                raise
            finally:
                if not committed:
                    await _rollback_quietly(tx)
        finally:
            if keep and not self._stopping:
                self._held.append(conn)
            else:
                await self.pool.release(conn)
        self._account(rows, result)
        if result.stuck:
            # Batches still queued in the producer would be delivered late, after their
            # retry: start afresh (once no other round uses it) rather than let them linger.
            self._recycle = True
        if result.outage:
            # A fresh producer after the outage: nothing of this one's lingers to be
            # retried into a broker that came back without its topic.
            self._recycle = True
            self._outage_generation = max(self._outage_generation, generation)
            self._note_outage(next(iter(result.failed.values())))
            return False
        self._note_healthy()
        # Go again at once after progress: a full batch may have more behind it, and an
        # acked event may have unblocked the next event of its key.
        return bool(result.acked) or len(rows) >= self.batch_size

    async def _publish(
        self, producer: AIOKafkaProducer, rows: Sequence[asyncpg.Record]
    ) -> RoundResult:
        result = RoundResult()
        loop = asyncio.get_running_loop()
        futures: dict[asyncio.Future[Any], int] = {}
        ack_times: dict[int, float] = {}

        def stamp(row_id: int) -> Callable[[asyncio.Future[Any]], None]:
            def done(fut: asyncio.Future[Any]) -> None:
                ack_times.setdefault(row_id, time.time())

            return done

        deadline = loop.time() + self.publish_timeout
        try:
            async with asyncio.timeout_at(deadline):
                for row in rows:
                    if row["payload"] is None:
                        result.failed[row["id"]] = PaymentMissing()
                        continue
                    try:
                        fut = await producer.send(
                            row["topic"],
                            bytes(row["payload"]),
                            key=row["key"].encode(),
                            headers=[
                                ("event_id", str(row["event_id"]).encode()),
                                ("event_type", row["event_type"].encode()),
                                *tracing.kafka_headers(row["traceparent"]),
                            ],
                        )
                    except Exception as exc:
                        result.failed[row["id"]] = exc
                        continue
                    fut.add_done_callback(stamp(row["id"]))
                    futures[fut] = row["id"]
        except TimeoutError:
            pass
        sent = set(futures.values())
        for row in rows:
            if row["id"] not in result.failed and row["id"] not in sent:
                result.failed[row["id"]] = KafkaTimeoutError("send timed out")
        if not futures:
            return result
        remaining = max(deadline - loop.time(), 0.0) + self.publish_timeout
        done, pending = await asyncio.wait(futures, timeout=remaining)
        # Decided here, once: a late callback must not change what the round settles.
        for fut in done:
            row_id = futures[fut]
            error = KafkaTimeoutError("send cancelled") if fut.cancelled() else fut.exception()
            if error is None:
                result.acked[row_id] = ack_times.get(row_id, time.time())
            else:
                result.failed[row_id] = error
        for fut in pending:
            fut.add_done_callback(_swallow)
            result.failed[futures[fut]] = KafkaTimeoutError("no acknowledgement in time")
            result.stuck = True
        return result

    async def _settle(
        self,
        conn: asyncpg.Connection,
        tx: Any,
        rows: Sequence[asyncpg.Record],
        result: RoundResult,
    ) -> None:
        """The acknowledged rows are already deleted (by the claim); the failed ones go
        back rescheduled or dead-lettered; then the round commits."""
        if result.failed:
            by_id = {r["id"]: r for r in rows}
            columns: list[list[Any]] = [[] for _ in range(len(_RESCHEDULED_COLUMNS) + 4)]
            for row_id, exc in result.failed.items():
                row = by_id[row_id]
                n = row["attempts"] + 1
                values = [row[c] for c in _RESCHEDULED_COLUMNS]
                values += [n, backoff_delay(n, self.backoff_base, self.backoff_cap)]
                values += [describe_error(exc), n >= self.max_attempts]
                for column, value in zip(columns, values, strict=True):
                    column.append(value)
            await conn.execute(_RESCHEDULE, *columns)
        await tx.commit()

    def _account(self, rows: Sequence[asyncpg.Record], result: RoundResult) -> None:
        if result.outage:
            metrics.kafka_publish.labels("error").inc(len(result.failed))
            return
        by_id = {r["id"]: r for r in rows}
        for row_id, acked_at in result.acked.items():
            lag = max(acked_at - by_id[row_id]["created_at"].timestamp(), 0.0)
            metrics.outbox_lag.observe(lag)
            for observe in self.lag_observers:
                observe(lag)
        if result.acked:
            metrics.kafka_publish.labels("ok").inc(len(result.acked))
        dead = 0
        for row_id, exc in result.failed.items():
            row = by_id[row_id]
            if row["attempts"] + 1 >= self.max_attempts:
                dead += 1
                log.error(
                    "outbox event dead-lettered after %d attempts: id=%d event_id=%s type=%s (%s)",
                    row["attempts"] + 1, row_id, row["event_id"], row["event_type"],
                    describe_error(exc),
                )  # fmt: skip
            else:
                log.info("outbox event %d will be retried: %s", row_id, describe_error(exc))
        if dead:
            metrics.kafka_publish.labels("dead_letter").inc(dead)
        if len(result.failed) > dead:
            metrics.kafka_publish.labels("retry").inc(len(result.failed) - dead)


# The round's transaction opens with the planner settings of its claim, in the same round
# trip: no sequential, bitmap or sort plans, so whatever the statistics say (see _CLAIM)
# the window is read from idx_outbox_pending in id order and stops at its LIMIT, and the
# claimed rows are found by primary key. (A bitmap scan of every pending row plus a sort
# measured 5-7 ms a claim at 20,000 queued rows, growing with the backlog.)
_BEGIN = (
    "BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;"
    " SET LOCAL enable_sort = off"
)
ROUND_SPACING_SECONDS = 0.01


class _RoundTransaction:
    """BEGIN (with `_BEGIN`'s settings) / COMMIT / ROLLBACK as plain statements."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def start(self) -> None:
        await self.conn.execute(_BEGIN)

    async def commit(self) -> None:
        await self.conn.execute("COMMIT")

    async def rollback(self) -> None:
        if self.conn.is_in_transaction():
            await self.conn.execute("ROLLBACK")


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


async def _rollback_quietly(tx: Any) -> None:
    try:
        await tx.rollback()
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        pass


async def _close_quietly(producer: AIOKafkaProducer, timeout: float = 5.0) -> None:
    try:
        await asyncio.wait_for(producer.stop(), timeout)
    except Exception as exc:
        log.debug("kafka producer did not close cleanly: %s", describe_error(exc))
