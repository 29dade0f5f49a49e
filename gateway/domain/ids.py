"""Time-ordered UUIDs (RFC 9562 version 7): new payments land at the right edge of
the primary-key index instead of scattering over it."""

from __future__ import annotations

import os
import threading
import time
import uuid

# The random bits come from the OS CSPRNG, drawn a few kilobytes at a time: a
# `getrandom` call per id cost more than the rest of the id on a loaded server.
_CHUNK = 4096  # bytes, ~400 ids per system call
_ID_RANDOM_BYTES = 10


class _Entropy(threading.local):
    def __init__(self) -> None:
        self.buffer = b""
        self.offset = 0


_entropy = _Entropy()


def _random_bits() -> int:
    """80 fresh random bits; no two calls (in any thread) get the same bytes."""
    e = _entropy
    start = e.offset
    if start + _ID_RANDOM_BYTES > len(e.buffer):
        e.buffer, start = os.urandom(_CHUNK), 0
    e.offset = start + _ID_RANDOM_BYTES
    return int.from_bytes(e.buffer[start : start + _ID_RANDOM_BYTES], "big")


def _forget_after_fork() -> None:
    # A forked child would otherwise hand out the bytes its parent hands out.
    _entropy.buffer, _entropy.offset = b"", 0


os.register_at_fork(after_in_child=_forget_after_fork)


def uuid7() -> uuid.UUID:
    ms = time.time_ns() // 1_000_000
    rand = _random_bits()
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a
    value |= 0b10 << 62  # variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF
    return uuid.UUID(int=value)
