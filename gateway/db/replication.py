"""Whether the primary paygate writes to replicates synchronously: the one setting that
decides if a failover can lose an acknowledged payment.

A 2xx is sent after COMMIT returns. With asynchronous replication COMMIT returns once
the primary has flushed its WAL; a standby promoted after the primary dies lacks
whatever had not reached it yet, so payments acknowledged in that window are gone.
With `synchronous_standby_names` naming a standby and `synchronous_commit` at `on`
(or `remote_write`/`remote_apply`) COMMIT waits until a synchronous standby has the
WAL too, so a promoted synchronous standby has every acknowledged payment.

`synchronous_commit` is read in paygate's own session: a role or database setting
(`ALTER ROLE paygate SET synchronous_commit = local`) overrides the server's default
and is what counts. `pg_stat_replication` shows each standby's state only to
superusers and members of `pg_monitor`/`pg_read_all_stats`; without that the standbys
are counted but their synchronous state is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

# The levels at which COMMIT waits for a synchronous standby (`local` and `off` do not).
WAITING_LEVELS = frozenset({"on", "remote_write", "remote_apply"})

_QUERY = """
SELECT current_setting('synchronous_standby_names') AS names,
       current_setting('synchronous_commit') AS commit_level,
       count(*) AS standbys,
       count(*) FILTER (WHERE sync_state IN ('sync', 'quorum')) AS synchronous,
       count(*) FILTER (WHERE sync_state IS NULL) AS hidden
FROM pg_catalog.pg_stat_replication
"""


@dataclass(frozen=True)
class Replication:
    standby_names: str  # synchronous_standby_names
    commit_level: str  # synchronous_commit, as paygate's session has it
    standbys: int  # rows in pg_stat_replication (walsenders: standbys and WAL receivers)
    synchronous_standbys: int  # of them, synchronous now (sync or quorum)
    hidden: int  # of them, state not visible to this role

    @property
    def synchronous(self) -> bool:
        """COMMIT waits for a synchronous standby: an acknowledged payment survives a
        failover to one."""
        return bool(self.standby_names.strip()) and self.commit_level in WAITING_LEVELS

    def describe(self) -> str:
        settings = (
            f"synchronous_standby_names={self.standby_names!r}, "
            f"synchronous_commit={self.commit_level}"
        )
        if self.hidden:
            seen = f"{self.standbys} standby connection(s), state not visible to this role"
        else:
            seen = (
                f"{self.synchronous_standbys} of {self.standbys} standby connection(s) synchronous"
            )
        if self.synchronous:
            if self.synchronous_standbys == 0 and not self.hidden:
                verdict = (
                    "synchronous, but no synchronous standby is connected: commits wait "
                    "until one is"
                )
            else:
                verdict = (
                    "synchronous: a failover to a synchronous standby loses no acknowledged payment"
                )
        elif self.standbys:
            verdict = "asynchronous: a failover can lose acknowledged payments"
        else:
            verdict = "no standby streams from this server"
        return f"{verdict} ({settings}; {seen})"


async def replication(conn: asyncpg.Connection, timeout: float = 2.0) -> Replication:
    row = await conn.fetchrow(_QUERY, timeout=timeout)
    assert row is not None
    return Replication(
        row["names"], row["commit_level"], row["standbys"], row["synchronous"], row["hidden"]
    )
