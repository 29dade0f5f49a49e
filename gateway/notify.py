"""The wake-up signal: the writer rings it after each commit so the outbox relay starts
publishing at once instead of at its next poll.

In one process it is an asyncio event. Under `paygate run` the relay lives in its own
process, so the supervisor names a Unix datagram socket (abstract namespace: nothing on
disk, gone with its owner) in `WAKEUP_SOCKET_ENV`: a server's ring also sends one empty
datagram there (a non-blocking syscall, ~2 µs, lost harmlessly when nobody listens or
the queue is full: the relay still polls), and the workers process listens on it
(`listen`) and rings its own event.
"""

from __future__ import annotations

import asyncio
import os
import socket
from contextlib import suppress

WAKEUP_SOCKET_ENV = "PAYGATE_WAKEUP_SOCKET"


def _address(name: str) -> str:
    return "\0" + name  # Linux abstract namespace


class Wakeup:
    def __init__(self, remote: str | None = None) -> None:
        self._event = asyncio.Event()
        self._remote = _address(remote) if remote else None
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls) -> Wakeup:
        """A wake-up that also reaches the relay process the supervisor started, if any."""
        return cls(os.environ.get(WAKEUP_SOCKET_ENV) or None)

    def ring(self) -> None:
        self._event.set()
        if self._remote is not None:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            with suppress(OSError):  # no listener (yet), or its queue is full: it polls
                self._sock.sendto(b"", self._remote)

    async def wait(self, timeout: float) -> bool:
        """Wait until rung or `timeout` passes; True if rung. Clears the signal."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._event.clear()

    def listen(self, name: str) -> socket.socket:
        """Ring this wake-up whenever a datagram arrives on the socket `name` (other
        processes' rings). Returns the socket; close it to stop listening."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(_address(name))
        sock.setblocking(False)
        loop = asyncio.get_running_loop()

        def readable() -> None:
            with suppress(OSError):  # drain what queued up: one ring for all of it
                while True:
                    sock.recv(1)
            self._event.set()

        loop.add_reader(sock.fileno(), readable)
        return sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def stop_listening(sock: socket.socket) -> None:
    with suppress(Exception):
        asyncio.get_running_loop().remove_reader(sock.fileno())
    sock.close()
