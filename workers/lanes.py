"""Which lanes of the event log this relay publishes, and where each one stands.

A key's events always fall in the same lane (sql/170's `event_lane`), and a lane is
published by one relay at a time: the one holding its session advisory lock, on the
relay's own connection (PITFALLS: a pool connection's reset would drop it). So per-key
order across relays reduces to order within a lane.

Relays share the lanes evenly and re-balance when one comes or goes: each holds a shared
"presence" lock, counts the holders in pg_locks, and keeps ceil(lanes / relays) lanes;
one with too many lets go of the surplus (its cursors written first), one with too few
takes free lanes. A relay that dies loses its locks with its session; its lanes are
taken from their last written cursors, so what it published since is published again
(at least once).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import asyncpg

from gateway.db.event_log import EVENT_LANES, LANE_CURSORS_SQL

LOCK_CLASS = 0x7067_6576  # "pgev": the advisory lock class of event-log lanes
PRESENCE = -1  # the lane number of the shared lock every relay holds
MAX_LATER = 1000  # outage rounds remembered per lane (at most a few seconds apart)

Snapshot = tuple[int, int, tuple[int, ...]]  # asyncpg's pg_snapshot: xmin, xmax, xip

_RELAYS = """
SELECT count(*) FROM pg_locks
WHERE locktype = 'advisory' AND classid = $1::oid AND objid = $2::oid AND objsubid = 2
  AND mode = 'ShareLock' AND granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


@dataclass(slots=True)
class LaneState:
    """A lane's cursor: every event of the lane visible in `done` is published; a round
    that could not take all of (done, target] in one page pins `target` and goes on
    after `after_seq`, up to the interval's largest seq `seq_hi` (learned by its first
    page; not written with the cursor: a relay taking the lane over learns it again)."""

    lane: int
    done: Snapshot
    target: Snapshot | None = None
    after_seq: int = 0
    persisted_at: float = 0.0
    dirty: bool = False  # moved since it was last written
    # Snapshots of rounds that could not publish (a broker outage): afterwards the lane
    # goes through them one interval at a time instead of reading the whole outage's
    # events as one interval, page after page.
    later: list[Snapshot] = field(default_factory=list)
    seq_hi: int | None = None

    def advance(
        self, target: Snapshot, complete: bool, last_seq: int | None, seq_hi: int | None = None
    ) -> None:
        if complete:
            moved = self.target is not None or self.done != target
            self.done, self.after_seq = target, 0
            self.target = self.seq_hi = None
        else:
            moved = True
            self.target = target
            if last_seq is not None:
                self.after_seq = last_seq
            if seq_hi is not None:
                self.seq_hi = seq_hi
        self.dirty = self.dirty or moved

    def remember(self, now: Snapshot) -> None:
        """The snapshot of a round that could not publish (an outage)."""
        if len(self.later) < MAX_LATER and (not self.later or self.later[-1] != now):
            self.later.append(now)

    def next_target(self) -> Snapshot | None:
        """The target to read up to: the pinned one, else the first remembered, else
        None (the round's own new snapshot)."""
        if self.target is None and self.later:
            self.target = self.later.pop(0)
        return self.target


def fair_share(lanes: int, relays: int) -> int:
    return math.ceil(lanes / max(relays, 1))


Persist = Callable[[asyncpg.Connection, Iterable[LaneState]], Awaitable[None]]


class Lanes:
    """The lanes one relay holds, on one connection."""

    def __init__(self, check_interval: float, total: int = EVENT_LANES) -> None:
        self.total = total
        self.check_interval = check_interval
        self.held: dict[int, LaneState] = {}
        self._checked_at = 0.0
        self._present = False

    def forget(self) -> None:
        """The connection is gone, and its locks with it."""
        self.held.clear()
        self._present = False
        self._checked_at = 0.0

    async def rebalance(self, conn: asyncpg.Connection, persist: Persist) -> None:
        """At most every `check_interval`: hold the fair share of lanes."""
        now = time.monotonic()
        if self._present and now - self._checked_at < self.check_interval:
            return
        self._checked_at = now
        if not self._present:
            await conn.execute("SELECT pg_advisory_lock_shared($1, $2)", LOCK_CLASS, PRESENCE)
            self._present = True
        relays = int(await conn.fetchval(_RELAYS, LOCK_CLASS, PRESENCE & 0xFFFF_FFFF))
        share = fair_share(self.total, relays)
        if len(self.held) > share:
            surplus = sorted(self.held)[share:]
            await persist(conn, [self.held[lane] for lane in surplus])
            for lane in surplus:
                await conn.execute("SELECT pg_advisory_unlock($1, $2)", LOCK_CLASS, lane)
                del self.held[lane]
        elif len(self.held) < share:
            taken: list[int] = []
            for lane in range(self.total):
                if len(self.held) + len(taken) >= share:
                    break
                if lane in self.held:
                    continue
                if await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", LOCK_CLASS, lane):
                    taken.append(lane)
            if taken:
                for row in await conn.fetch(LANE_CURSORS_SQL, taken):
                    self.held[row["lane"]] = LaneState(
                        row["lane"], row["done"], row["target"], row["after_seq"], now
                    )
