"""The group-commit writer: many requests, one transaction.

A request hands its validated payment to `submit` and awaits a future (failed with 503
`write_timeout` if it is not settled within WEBHOOK_TIMEOUT_MS). Writer tasks
collect up to WRITE_BATCH_MAX_SIZE payments (waiting at most WRITE_BATCH_MAX_WAIT_MS
for a batch to fill), ask Redis about all of them in one pipelined call, record the
rest in one statement, and only then resolve the futures. A 2xx therefore always
means committed. When the queue is full or Postgres is unreachable the future fails
with a 503 quickly: the provider retries, and the reference table makes the retry
land exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass

import asyncpg

from gateway.config import Settings
from gateway.db import primary
from gateway.db.errors import describe_text
from gateway.db.payments import Candidate, Existing, Loser, record_batch, record_losers
from gateway.errors import PaygateError, ServiceUnavailable, ValidationError
from gateway.ingest.dedup import Deduplicator, Known
from gateway.notify import Wakeup
from gateway.observability import metrics, tracing

log = logging.getLogger(__name__)

# What the writer decided for one payment; REJECTED: the database refused its data (422).
CREATED, DUPLICATE, CONFLICT, REJECTED = "created", "duplicate", "conflict", "rejected"

RETRY_ERRORS = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)

# Run on the writer's connection after a batch committed, with the payments it created that
# have status updates waiting for them (pending_status_updates): rare, so the hot path
# pays only an EXISTS probe inside the recording statement.
AfterCommit = Callable[[asyncpg.Connection, Sequence[Candidate]], Awaitable[None]]


# Not frozen: one per payment, and a frozen init sets each field through
# object.__setattr__ (4x the cost). Never changed once made.
@dataclass(slots=True)
class WriteResult:
    outcome: str  # created | duplicate | conflict | rejected
    payment_id: str
    status: str | None  # the stored status (None if its partition is gone)
    layer: str  # where it was decided: database | redis | batch
    existing: Existing | None = None


class GroupCommitWriter:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        dedup: Deduplicator,
        wakeup: Wakeup | None = None,
        after_commit: Sequence[AfterCommit] | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.dedup = dedup
        self.wakeup = wakeup
        self.after_commit = list(after_commit or ())
        self.queue: asyncio.Queue[tuple[Candidate, asyncio.Future[WriteResult]]] = asyncio.Queue()
        self.in_flight = 0
        # (deadline, future) in submission order, so the oldest deadline is always first.
        self._deadlines: deque[tuple[float, asyncio.Future[WriteResult]]] = deque()
        # Connections the writer keeps between batches: a pool release runs asyncpg's
        # reset query, one more round trip per batch and real CPU at small batches.
        self._held: list[asyncpg.Connection] = []
        # ...but never so many that the rest of the process (health, status updates, ops
        # API) is left without a connection.
        self._keep = max(0, min(settings.write_concurrency, settings.db_pool_max - 2))
        self._tasks: list[asyncio.Task[None]] = []
        self._accepting = False
        self._loop: asyncio.AbstractEventLoop  # set by start(), before any submit
        self.db_down_since: float | None = None

    # -- requests ---------------------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def saturated(self) -> bool:
        return self.in_flight >= self.settings.write_queue_max

    def submit(self, candidate: Candidate) -> asyncio.Future[WriteResult]:
        if not self._accepting:
            raise ServiceUnavailable("shutting down", code="shutting_down")
        if self.saturated:
            raise ServiceUnavailable("too many payments waiting to be written", code="overloaded")
        if self.db_down_since is not None and time.monotonic() - self.db_down_since < 0.5:
            # The last batch just failed to reach Postgres: answer now, not after a timeout.
            raise ServiceUnavailable("database unavailable", code="database_unavailable")
        loop = self._loop
        fut: asyncio.Future[WriteResult] = loop.create_future()
        self.in_flight += 1
        self.queue.put_nowait((candidate, fut))
        self._deadlines.append((loop.time() + self.settings.webhook_timeout_ms / 1000, fut))
        return fut

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        # Open the writers' connections now, not under the first burst of traffic (a new
        # connection costs a handshake and the type-codec set-up: tens of milliseconds).
        with suppress(*primary.UNAVAILABLE):
            for _ in range(self._keep - len(self._held)):
                self._held.append(await self.pool.acquire(timeout=2))
        # Kept, not looked up per payment: CPython's get_running_loop() makes a getpid()
        # system call every time (its fork check; bench/RESULTS.md has what it measured).
        self._loop = asyncio.get_running_loop()
        self._accepting = True
        self._tasks = [
            asyncio.create_task(self._run(), name=f"paygate-writer-{i}")
            for i in range(self.settings.write_concurrency)
        ]
        self._tasks.append(asyncio.create_task(self._expire(), name="paygate-writer-deadlines"))

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop taking payments, commit what is queued, then stop the tasks."""
        self._accepting = False
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        held, self._held = self._held, []
        for conn in held:
            await self._release(conn)
        while not self.queue.empty():
            _, fut = self.queue.get_nowait()
            self._settle(fut, exc=ServiceUnavailable("shutting down", code="shutting_down"))

    async def _expire(self) -> None:
        """Fail the futures of payments not settled by their deadline with 503.

        One sweeping task instead of a timer per request (`asyncio.timeout` costs ~5 µs a
        request). Failing a future never cancels its batch: the writer skips futures that
        are already done and commits the batch for everyone else.
        """
        loop = asyncio.get_running_loop()
        period = min(0.05, self.settings.webhook_timeout_ms / 4000)
        pending = self._deadlines
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            while pending and (pending[0][1].done() or pending[0][0] <= now):
                _, fut = pending.popleft()
                if not fut.done():
                    fut.set_exception(
                        ServiceUnavailable(
                            "the write did not complete in time", code="write_timeout"
                        )
                    )

    # -- batching ---------------------------------------------------------------------------

    async def _run(self) -> None:
        max_size = self.settings.write_batch_max_size
        wait = self.settings.write_batch_max_wait_ms / 1000
        while True:
            batch = [await self.queue.get()]
            self._drain(batch, max_size)
            if len(batch) < max_size and wait > 0:
                await asyncio.sleep(wait)
                self._drain(batch, max_size)
            metrics.write_queue_depth.set(self.in_flight)
            try:
                traces = (candidate.trace for candidate, _ in batch)
                size = {"paygate.batch.size": len(batch)}
                with tracing.linked_span("paygate.group_commit.batch", traces, **size):
                    await self._write(batch)
            except asyncio.CancelledError:
                for _, fut in batch:
                    self._settle(fut, exc=ServiceUnavailable("shutting down", code="shutting_down"))
                raise
            except Exception:  # a bug must fail the batch, never kill the writer
                log.exception("group commit failed unexpectedly")
                for _, fut in batch:
                    self._settle(fut, exc=ServiceUnavailable("write failed", code="write_failed"))

    def _drain(
        self, batch: list[tuple[Candidate, asyncio.Future[WriteResult]]], limit: int
    ) -> None:
        while len(batch) < limit:
            try:
                batch.append(self.queue.get_nowait())
            except asyncio.QueueEmpty:
                return

    def _settle(
        self,
        fut: asyncio.Future[WriteResult],
        result: WriteResult | None = None,
        exc: BaseException | None = None,
    ) -> None:
        self.in_flight -= 1
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            assert result is not None
            fut.set_result(result)

    async def _write(self, batch: list[tuple[Candidate, asyncio.Future[WriteResult]]]) -> None:
        # Coalesce: the first candidate of a reference goes to the database, the others
        # follow its fate (duplicate of it, or conflict with it).
        leaders: dict[str, tuple[Candidate, asyncio.Future[WriteResult]]] = {}
        followers: list[tuple[Candidate, asyncio.Future[WriteResult]]] = []
        for item in batch:
            ref = item[0].payment.reference_number
            if ref in leaders:
                followers.append(item)
            else:
                leaders[ref] = item
        refs = sorted(leaders)
        decided: dict[str, WriteResult] = {}

        for ref, known in zip(refs, await self.dedup.lookup_remote(refs), strict=True):
            cand = leaders[ref][0]
            if (
                known is not None
                and known.payload_hash == cand.payment.payload_hash
                and known.status == cand.payment.status
            ):
                decided[ref] = WriteResult(DUPLICATE, known.payment_id, known.status, "redis")
        todo = [leaders[r][0] for r in refs if r not in decided]

        if todo:
            try:
                written = await self._commit(todo)
            except PaygateError as exc:
                for ref in refs:
                    if ref not in decided:
                        self._settle(leaders[ref][1], exc=exc)
                        leaders.pop(ref)
                written = {}
                if not leaders:
                    for _cand, fut in followers:
                        self._settle(fut, exc=exc)
                    return
            decided.update(written)

        self._resolve(leaders, followers, decided)

    def _resolve(
        self,
        leaders: dict[str, tuple[Candidate, asyncio.Future[WriteResult]]],
        followers: list[tuple[Candidate, asyncio.Future[WriteResult]]],
        decided: dict[str, WriteResult],
    ) -> None:
        fresh: list[tuple[str, Known]] = []
        for ref, (cand, fut) in leaders.items():
            result = decided[ref]
            if result.outcome != CONFLICT and result.status is not None:
                known = Known(result.payment_id, cand.payment.payload_hash, result.status)
                fresh.append((ref, known))
            self._settle(fut, result)
        for cand, fut in followers:
            ref = cand.payment.reference_number
            lead = decided.get(ref)
            if lead is None:
                self._settle(fut, exc=ServiceUnavailable("write failed", code="write_failed"))
                continue
            same = cand.payment.payload_hash == leaders[ref][0].payment.payload_hash
            outcome = DUPLICATE if same and lead.outcome != CONFLICT else CONFLICT
            self._settle(fut, WriteResult(outcome, lead.payment_id, lead.status, "batch"))
        if fresh:
            self.dedup.remember(fresh)
            self.dedup.publish_later(fresh)

    async def _commit(self, todo: list[Candidate]) -> dict[str, WriteResult]:
        started = time.perf_counter()
        for attempt in range(3):
            try:
                conn = await self._take()
                try:
                    outcome = await record_batch(
                        conn, todo, source="webhook", topic=self.settings.kafka_topic,
                        actor="webhook",
                    )  # fmt: skip
                    results, losers = self._classify(todo, outcome.lost, outcome.existing)
                    if losers:
                        await record_losers(conn, losers, actor="webhook")
                    waiting = [c for c in todo if c.payment_id in outcome.parked]
                    if waiting:
                        for hook in self.after_commit:
                            await hook(conn, waiting)
                except primary.UNAVAILABLE as exc:
                    # Broken, unreachable or read-only: never used again (nor, when the
                    # server is lost, any other connection to it).
                    lost = await primary.forget(self.pool, conn, exc)
                    await self._release(conn)
                    if lost:
                        await self._drop_held()
                    raise
                except BaseException:
                    await self._release(conn)  # the pool resets it (aborts any transaction)
                    raise
                if len(self._held) < self._keep:
                    self._held.append(conn)
                else:
                    await self._release(conn)
                break
            except RETRY_ERRORS:
                if attempt == 2:
                    raise ServiceUnavailable("database busy", code="database_busy") from None
            except primary.UNAVAILABLE as exc:
                # Whether a COMMIT in flight happened is unknown: 503, and the provider's
                # retry lands once (as a duplicate with the same id if it did).
                self.db_down_since = time.monotonic()
                log.warning("group commit could not reach the database: %s", describe_text(exc))
                raise ServiceUnavailable(
                    "database unavailable", code="database_unavailable"
                ) from None
            except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
                log.warning("the database refused a batch of %d: %s", len(todo), describe_text(exc))
                if len(todo) == 1:
                    raise ValidationError(
                        "body", f"rejected by the database ({exc.sqlstate})"
                    ) from None
                return await self._commit_one_by_one(todo)
        self.db_down_since = None
        metrics.write_batch_size.observe(len(todo))
        metrics.write_commit_duration.observe(time.perf_counter() - started)
        if outcome.recorded and self.wakeup is not None:
            self.wakeup.ring()
        return results

    async def _take(self) -> asyncpg.Connection:
        while self._held:
            conn = self._held.pop()
            if primary.usable(conn):
                return conn
            await self._release(conn)
        return await self.pool.acquire(timeout=2)

    async def _drop_held(self) -> None:
        """The server went away or turned read-only: the connections kept between batches
        were opened to it too."""
        held, self._held = self._held, []
        for conn in held:
            primary.terminate(conn)
            await self._release(conn)

    async def _release(self, conn: asyncpg.Connection) -> None:
        with suppress(Exception):  # a closing pool or a dead connection: nothing to keep
            await self.pool.release(conn)

    async def _commit_one_by_one(self, todo: list[Candidate]) -> dict[str, WriteResult]:
        """A row the database refused must not sink its batch: isolate it."""
        results: dict[str, WriteResult] = {}
        for cand in todo:
            try:
                results.update(await self._commit([cand]))
            except ValidationError as exc:
                log.warning("payment refused by the database: %s", exc.detail)
                results[cand.payment.reference_number] = WriteResult(
                    REJECTED, "", None, "database", None
                )
        return results

    def _classify(
        self, todo: list[Candidate], lost: set[uuid.UUID], existing: dict[str, Existing]
    ) -> tuple[dict[str, WriteResult], list[Loser]]:
        results: dict[str, WriteResult] = {}
        losers: list[Loser] = []
        for cand in todo:
            ref = cand.payment.reference_number
            if cand.payment_id not in lost:
                results[ref] = WriteResult(
                    CREATED, str(cand.payment_id), cand.payment.status, "database"
                )
                continue
            ex = existing[ref]
            details: dict[str, object] | None = None
            if ex.payload_hash == cand.payment.payload_hash:
                outcome = DUPLICATE
            else:
                outcome = CONFLICT
                details = {
                    "channel": cand.channel,
                    "received": {
                        "amount": str(cand.payment.amount),
                        "loan_account_number": cand.payment.loan_account_number,
                        "cif": cand.payment.cif,
                        "payment_date": cand.payment.payment_date.isoformat(),
                    },
                }
            results[ref] = WriteResult(outcome, ex.payment_id, ex.status, "database", ex)
            losers.append(
                Loser(
                    ref, ex.payment_id, outcome, cand.channel, cand.delivery_id, cand.body, details
                )
            )
        return results, losers
