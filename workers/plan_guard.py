"""When the relay's read is slow for what it returned, its session's cached plans go.

The relay prepares its read once, and PostgreSQL soon runs it with a generic plan chosen
with the statistics of that moment. A payments partition analyzed while empty (a month
made in advance, a VACUUM ANALYZE of a quiet database) makes a secondary index look free
there, and the generic plan then finds each recorded event's payment by scanning that
index: the whole partition per event, every round, until autovacuum analyzes the
partition again. bench.e2e, which analyzes the tables before each phase, saw a 14 s read
and 38 s of publish lag at 512 connections. Planning the read again costs 10-30 ms, so a
read that took long for the events it returned is followed by DISCARD PLANS: the next
reads are planned with the statistics and the table sizes of now.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# A sound read costs ~15-50 µs an event (4,000 in 60-190 ms), plus its planning (10-30 ms
# for each of the first reads after the plans went) however few it returns; the bad plan
# above costs 0.17 µs an event for each payment of its day. Only a read with enough events
# for their cost to outweigh a planning is judged.
MIN_EVENTS = 32
SLOW_READ_SECONDS = 0.05
SLOW_SECONDS_PER_EVENT = 100e-6
# A read slow for another reason (a starved CPU) costs at most a few plans this often.
DISCARD_INTERVAL_SECONDS = 10.0

DISCARD_SQL = "DISCARD PLANS"


@dataclass
class PlanGuard:
    discarded_at: float = -math.inf
    discards: int = 0

    def should_discard(self, took: float, events: int, now: float) -> bool:
        """Whether a read that took `took` seconds for `events` events calls for fresh plans."""
        if events < MIN_EVENTS or took < max(SLOW_READ_SECONDS, SLOW_SECONDS_PER_EVENT * events):
            return False
        if now - self.discarded_at < DISCARD_INTERVAL_SECONDS:
            return False
        self.discarded_at = now
        self.discards += 1
        return True
