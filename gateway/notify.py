"""An in-process wake-up signal: the writer rings it after each commit so a relay in
the same process starts publishing at once instead of at its next poll."""

from __future__ import annotations

import asyncio


class Wakeup:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def ring(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """Wait until rung or `timeout` passes; True if rung. Clears the signal."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._event.clear()
