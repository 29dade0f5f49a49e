"""The shape every background worker shares: a poll loop woken early by a signal,
a burst mode that runs until there is no work (what tests call), and a stop that
lets the current round finish before cancelling."""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from gateway.db import primary
from gateway.db.errors import describe_text
from gateway.notify import Wakeup
from workers.backoff import backoff_ceiling

log = logging.getLogger(__name__)


class Worker:
    name = "worker"

    def __init__(self, interval: float, wakeup: Wakeup | None = None) -> None:
        self.interval = interval
        self.wakeup = wakeup or Wakeup()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.consecutive_failures = 0

    async def run_once(self) -> bool:
        """Do one round of work; return True if there may be more right away."""
        raise NotImplementedError

    async def on_start(self) -> None:
        """Open what the worker needs (clients, listeners)."""

    async def on_stop(self) -> None:
        """Close what on_start opened; must be safe to call twice."""

    async def burst(self, max_rounds: int = 1_000_000) -> int:
        """Run rounds until one reports no more work; return the number of rounds."""
        rounds = 0
        while rounds < max_rounds:
            rounds += 1
            if not await self.run_once():
                break
        return rounds

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                more = await self.run_once()
                self.consecutive_failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.consecutive_failures += 1
                # Capped at the poll interval (and 32 s): a failing round retries no
                # later than a healthy idle worker would look again.
                delay = backoff_ceiling(self.consecutive_failures, 1.0, min(self.interval, 32.0))
                if primary.unavailable(exc):
                    # Down or failing over: the pool has dropped what pointed at the old
                    # server, and the next round connects to whichever host takes writes.
                    log.warning(
                        "%s round failed, database unavailable (%s); retrying in %.1fs",
                        self.name, describe_text(exc), delay,
                    )  # fmt: skip
                else:
                    log.exception("%s round failed; retrying in %.1fs", self.name, delay)
                await asyncio.sleep(delay)
                continue
            if not more and not self._stopping:
                await self.wakeup.wait(self.interval)

    async def start(self) -> None:
        await self.on_start()
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name=f"paygate-{self.name}")

    async def stop(self, grace: float = 5.0) -> None:
        self._stopping = True
        self.wakeup.ring()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), grace)
            except (TimeoutError, Exception):
                task.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await task
        await self.on_stop()
