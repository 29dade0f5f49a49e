"""The outbox relay: publishes committed outbox rows to Kafka, at least once, in order
per key, and deletes each row only after the broker acknowledged it (acks=all).

One round, in one transaction:

1. Claim up to `KAFKA_BATCH_SIZE` due rows in id order with `FOR UPDATE SKIP LOCKED`.
   A row is claimable only when no older undead row of the same key exists (whether
   that one is rescheduled after a failure, locked by another relay, or simply older):
   so a claim holds at most one row per key, the oldest, and the events of a key are
   published strictly one after the other, each only after its predecessor was acked.
   This is what makes several relays safe together: the row locks keep two relays
   from publishing the same row, and the per-key rule keeps them from reordering a key.
   The cost is one round per event of a key with a backlog; payments have a handful.
2. Send every claimed row (bounded by a deadline: `send()` can wait on a full buffer),
   then wait for the acknowledgements, again under a deadline.
3. Delete the acknowledged rows; reschedule the failed ones with exponential backoff
   and full jitter, or dead-letter them at `OUTBOX_MAX_ATTEMPTS`; commit. This write is
   shielded from cancellation, so a stop never loses a round's bookkeeping.

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
from gateway.notify import Wakeup
from gateway.observability import metrics
from workers.backoff import backoff_delay
from workers.base import Worker

log = logging.getLogger(__name__)

ProducerFactory = Callable[[Settings], AIOKafkaProducer]
LagObserver = Callable[[float], None]

OUTAGE_BACKOFF_CAP_SECONDS = 5.0
ERROR_TEXT_MAX = 300

# The oldest due rows first, and of each key only its oldest undead row (per-key order).
# Candidates are the first `$2` due rows by id, materialized, so the per-key check is
# an index probe per candidate whatever the statistics say: left to itself, with stale
# statistics on a fast-growing outbox the planner hash-anti-joined the whole backlog
# and sorted it on disk (440 ms at 130,000 rows, growing with the backlog: a relay that
# fell behind could not catch up). The shape below: 67 ms cold, 5 ms warm, same backlog.
_CLAIM = """
WITH candidates AS MATERIALIZED (
    SELECT id, key FROM payment_service.outbox
    WHERE dead_lettered_at IS NULL AND next_attempt_at <= now()
    ORDER BY id
    LIMIT $2
)
SELECT o.id, o.event_id, o.event_type, o.topic, o.key, o.payload, o.attempts, o.created_at
FROM candidates c
JOIN payment_service.outbox o ON o.id = c.id
WHERE o.dead_lettered_at IS NULL
  AND o.next_attempt_at <= now()  -- re-checked on the locked row, as before the window
  AND NOT EXISTS (
      SELECT 1 FROM payment_service.outbox older
      WHERE older.key = c.key AND older.id < c.id AND older.dead_lettered_at IS NULL
  )
ORDER BY o.id
LIMIT $1
FOR UPDATE OF o SKIP LOCKED
"""

# Candidates per claimed row: room for other relays' locked rows and for rows held back
# behind an older event of their key. (A round finds nothing only if every one of the
# first CLAIM_WINDOW x KAFKA_BATCH_SIZE due rows is held back; the rows holding them come
# due with their backoff or are dead-lettered, and the next round moves on.)
CLAIM_WINDOW = 4

_DELETE = "DELETE FROM payment_service.outbox WHERE id = ANY($1::bigint[])"

_RESCHEDULE = """
UPDATE payment_service.outbox o
SET attempts = u.attempts,
    next_attempt_at = now() + make_interval(secs => u.delay),
    last_error = u.error,
    dead_lettered_at = CASE WHEN u.dead THEN now() END
FROM unnest($1::bigint[], $2::int[], $3::float8[], $4::text[], $5::bool[])
    AS u(id, attempts, delay, error, dead)
WHERE o.id = u.id
"""


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
        await self._drop_producer()

    # -- one round ----------------------------------------------------------------------

    async def run_once(self) -> bool:
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

    async def _round(self, producer: AIOKafkaProducer, generation: int) -> bool:
        async with self.pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            committed = False
            try:
                rows = await conn.fetch(_CLAIM, self.batch_size, CLAIM_WINDOW * self.batch_size)
                if not rows:
                    await tx.commit()
                    committed = True
                    self._note_healthy()  # the producer started: the broker answers
                    return False
                result = await self._publish(producer, rows)
                if result.acked and generation <= self._outage_generation:
                    result.distrust_acks()
                if result.outage:
                    await tx.rollback()
                    committed = True
                else:
                    await _uncancellable(self._settle(conn, tx, rows, result))
                    committed = True
            except (asyncpg.InternalClientError, asyncpg.InterfaceError):
                # A connection broken mid-protocol (server restart, cut backend) can be left
                # in a state asyncpg cannot reset: drop it instead of returning it to the pool.
                committed = True
                conn.terminate()
                raise
            finally:
                if not committed:
                    await _rollback_quietly(tx)
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
                    try:
                        fut = await producer.send(
                            row["topic"],
                            bytes(row["payload"]),
                            key=row["key"].encode(),
                            headers=[
                                ("event_id", str(row["event_id"]).encode()),
                                ("event_type", row["event_type"].encode()),
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
        if result.acked:
            await conn.execute(_DELETE, list(result.acked))
        if result.failed:
            by_id = {r["id"]: r for r in rows}
            ids, attempts, delays, errors, dead = [], [], [], [], []
            for row_id, exc in result.failed.items():
                n = by_id[row_id]["attempts"] + 1
                ids.append(row_id)
                attempts.append(n)
                delays.append(backoff_delay(n, self.backoff_base, self.backoff_cap))
                errors.append(describe_error(exc))
                dead.append(n >= self.max_attempts)
            await conn.execute(_RESCHEDULE, ids, attempts, delays, errors, dead)
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
