"""The child processes of `paygate run` / `paygate dev`: the extra server processes on
the shared port and the one process that runs the background workers.

Each child dies with its parent (PR_SET_PDEATHSIG: SIGTERM, so an orphan still finishes
what it accepted), so `kill -9` of the parent leaves nothing behind. A child that exits
while it is not being stopped is started again after a backoff (1 s doubling to 30 s,
reset once a child has lived a minute): one crashed server or relay must not take the
others down, nor be quietly gone.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
RESTART_BACKOFF_FIRST = 1.0
RESTART_BACKOFF_MAX = 30.0
HEALTHY_AFTER_SECONDS = 60.0


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


async def wait_exit(proc: subprocess.Popen[bytes]) -> int:
    """The child's exit code, awaited on a pidfd (readable once it exits): no thread
    parked per child, however many there are."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        fd = os.pidfd_open(proc.pid)
    except OSError:  # pragma: no cover - kernels before 5.3
        while proc.poll() is None:
            await asyncio.sleep(0.1)
        return proc.returncode
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await exited
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return proc.wait()


class Child:
    """One `paygate <args>` child, restarted when it dies on its own."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str]) -> None:
        self.name = name
        self.argv = [sys.executable, "-m", "workers.cli", *args]
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._stopping = False
        self._watch: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def _spawn(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env, preexec_fn=_die_with_parent)

    def start(self) -> None:
        self._stopping = False
        self._spawn()
        self._watch = asyncio.create_task(self._supervise(), name=f"supervise-{self.name}")

    async def _supervise(self) -> None:
        delay = RESTART_BACKOFF_FIRST
        while not self._stopping:
            assert self.proc is not None
            started = time.monotonic()
            code = await wait_exit(self.proc)
            if self._stopping:
                return
            if time.monotonic() - started > HEALTHY_AFTER_SECONDS:
                delay = RESTART_BACKOFF_FIRST
            log.error(
                "%s process %d exited with code %s; starting it again in %.0fs",
                self.name, self.proc.pid, code, delay,
            )  # fmt: skip
            await asyncio.sleep(delay)
            if self._stopping:
                return
            delay = min(delay * 2, RESTART_BACKOFF_MAX)
            self.restarts += 1
            self._spawn()

    async def stop(self, timeout: float) -> None:
        """SIGTERM, wait up to `timeout`, then SIGKILL."""
        self._stopping = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(wait_exit(proc), timeout)
            except TimeoutError:
                log.warning("%s process %d did not stop in time; killed", self.name, proc.pid)
                proc.kill()
                await wait_exit(proc)
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None


async def stop_all(children: Sequence[Child], timeout: float) -> None:
    await asyncio.gather(*(c.stop(timeout) for c in children))
