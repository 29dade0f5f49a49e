"""Keeping the deliveries refused after verification (422, invalid JSON, ignored event
types), so an operator can find them and replay them once the mapping is fixed.

The refusal is committed before it is answered: a provider that gets a 4xx (or a 200
"ignored") does not send the delivery again, so a refusal we failed to store would be a
delivery lost. If Postgres cannot take it, the answer is 503 and the provider retries.

Refusals are batched like payments (one INSERT per batch, on one connection), so a
channel whose mapping is broken, refusing everything it is sent, costs a statement per
batch rather than a connection per request; accepted deliveries never come here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress

import asyncpg
import orjson

from gateway.db.deliveries import Refused, insert_refused
from gateway.errors import PaygateError, ServiceUnavailable
from gateway.ingest.channels import Channel

log = logging.getLogger(__name__)

BATCH_MAX = 200
QUEUE_MAX = 10_000
TIMEOUT_SECONDS = 5.0


def refused_outcome(exc: PaygateError) -> str | None:
    """The stored outcome for a refusal after verification, or None if it is not kept
    (infrastructure failures are retried by the provider; nothing was decided)."""
    if exc.status == 422:
        return "invalid"
    if exc.status == 400 and exc.code == "invalid_json":
        return "invalid_json"
    return None


def without_nul(value: object) -> object:
    """`value` with every NUL character replaced: Postgres text and jsonb cannot hold one
    (SQLSTATE 22021 / 22P05), and a refused body may well carry one into the reference,
    the delivery id or the error's detail. Input must not turn a refusal into a 503."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_nul(v) for v in value]
    return value


def reference_of(fields: object) -> str | None:
    """The reference a refused body names, if it names one (for searching by it)."""
    if isinstance(fields, dict):
        ref = fields.get("reference_number")
        if isinstance(ref, str | int) and not isinstance(ref, bool):
            return str(ref)[:255] or None
    return None


def refusal(
    channel: Channel, body: bytes, delivery_id: str | None, outcome: str, error: dict[str, object]
) -> Refused:
    """What is stored for a refused delivery: its bytes, the answer, and the reference it
    names if the channel's mapping finds one (parsed again: this is the rare path)."""
    try:
        reference = reference_of(channel.extract(orjson.loads(body)))
    except (PaygateError, orjson.JSONDecodeError, TypeError, ValueError):
        reference = None
    return Refused(
        channel.name,
        None if delivery_id is None else str(without_nul(delivery_id)),
        None if reference is None else str(without_nul(reference)),
        outcome,
        body,
        without_nul(error),  # type: ignore[arg-type]
    )


class RefusalRecorder:
    def __init__(self, pool: Callable[[], asyncpg.Pool]) -> None:
        self._pool = pool
        self._queue: asyncio.Queue[tuple[Refused, asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def record(self, refused: Refused) -> None:
        """Return once the refusal is committed; ServiceUnavailable if it cannot be."""
        if self._task is None or self._queue.qsize() >= QUEUE_MAX:
            raise ServiceUnavailable("cannot keep the refused delivery now", code="overloaded")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((refused, fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), TIMEOUT_SECONDS)
        except TimeoutError:
            raise ServiceUnavailable(
                "the refused delivery was not stored in time", code="write_timeout"
            ) from None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="paygate-refusals")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        while not self._queue.empty():  # what is queued is still written
            await asyncio.sleep(0.01)
            if task.done():
                break
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH_MAX and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                async with self._pool().acquire(timeout=2) as conn:
                    await insert_refused(conn, [r for r, _ in batch])
            except asyncio.CancelledError:
                self._fail(batch, ServiceUnavailable("shutting down", code="shutting_down"))
                raise
            except Exception as exc:
                log.warning("could not store refused deliveries: %s", type(exc).__name__)
                self._fail(batch, ServiceUnavailable("database unavailable",
                                                     code="database_unavailable"))  # fmt: skip
                continue
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    @staticmethod
    def _fail(batch: list[tuple[Refused, asyncio.Future[None]]], exc: BaseException) -> None:
        for _, fut in batch:
            if not fut.done():
                fut.set_exception(exc)
