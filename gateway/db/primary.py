"""Noticing that the server paygate writes to is no longer a writable primary, in one place.

After a failover the old primary is either gone (connections break, connects are
refused) or still up and refusing writes: demoted, in recovery, or switched to
`default_transaction_read_only` by the failover tool, so that every write fails with
SQLSTATE 25006 (read_only_sql_transaction). A connection kept to such a server would
fail every later write, so it must go, and with it every other connection of the pool:
they were all opened to the same server. New connections find the new primary by
themselves when DATABASE_URL lists the hosts with `target_session_attrs=read-write`
(asyncpg tries them in order and skips one that is down, in recovery or read-only).

- `unavailable(exc)`: the database cannot take the work now (503 `database_unavailable`
  with `Retry-After`, never a 500); what the writer, the request context and the
  workers ask.
- `lost_server(exc)`: the server itself is gone or read-only: drop every connection.
- `forget(pool, conn)`: that drop, for code that holds connections (the writer).
- `PrimaryPool`: the pool every component shares; a connection whose `async with
  pool.acquire()` block (or `pool.fetch`/`pool.execute`) ends with `lost_server` is
  terminated and the pool's other connections are replaced on their next acquire.

A failed statement never says whether a COMMIT that was on its way happened: callers
answer 503 for it, the provider retries, and the reference table makes the retry land
once (as a duplicate with the first id when the commit did happen).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from types import TracebackType
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from gateway.db.errors import describe_text

log = logging.getLogger(__name__)

# The server is gone, cannot be reached, is shutting down or refuses writes.
LOST_SERVER: tuple[type[BaseException], ...] = (
    ConnectionError,  # refused, reset, broken pipe (OSError subclasses)
    asyncpg.PostgresConnectionError,  # 08xxx, including "connection was closed mid-operation"
    asyncpg.InternalClientError,  # a broken protocol state; no host matched read-write
    asyncpg.CannotConnectNowError,  # 57P03: starting up, shutting down, in recovery
    asyncpg.AdminShutdownError,  # 57P01
    asyncpg.CrashShutdownError,  # 57P02
    asyncpg.ReadOnlySQLTransactionError,  # 25006: the server no longer takes writes
)

# Everything above, plus what says "not now" without blaming the server: timeouts (a pool
# exhausted, a command or connect that took too long), other OS errors, a connection
# asyncpg refuses to use, too many clients.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    *LOST_SERVER,
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.TooManyConnectionsError,
)


def lost_server(exc: BaseException) -> bool:
    return isinstance(exc, LOST_SERVER)


def unavailable(exc: BaseException) -> bool:
    return isinstance(exc, UNAVAILABLE)


def terminate(conn: asyncpg.Connection) -> None:
    """Close `conn` at once. A pool connection whose socket already died has been handed
    back to its pool by asyncpg (the proxy is detached and refuses every call): nothing
    is left to close then."""
    with suppress(asyncpg.InterfaceError):
        conn.terminate()


def usable(conn: asyncpg.Connection) -> bool:
    """Open and still ours (not detached from the pool because its socket died)."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


async def forget(pool: asyncpg.Pool, conn: asyncpg.Connection | None, exc: BaseException) -> bool:
    """After `exc` on `conn`: terminate `conn` (its state is unknown) and, when the server
    itself is lost, expire the pool so no connection to it is used again; True then.

    A connection asyncpg already detached (its socket died while it was held, so the
    call failed with "released back to the pool") counts as a lost server too."""
    lost = lost_server(exc) or (conn is not None and not usable(conn))
    if conn is not None:
        terminate(conn)
    if lost:
        await pool.expire_connections()
        log.warning(
            "database connection lost (%s): reconnecting to whichever host takes writes",
            describe_text(exc),
        )
    return lost


class _Acquire:
    """`pool.acquire()` that drops the connection when its block ended with a lost server.

    Awaitable (`conn = await pool.acquire()`) and an async context manager, like
    asyncpg's own."""

    __slots__ = ("_inner", "_pool", "_proxy")

    def __init__(self, pool: PrimaryPool, inner: Any) -> None:
        self._pool = pool
        self._inner = inner
        self._proxy: PoolConnectionProxy | None = None

    def __await__(self) -> Any:
        return self._inner.__await__()

    async def __aenter__(self) -> PoolConnectionProxy:
        self._proxy = await self._inner.__aenter__()
        return self._proxy

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and self._proxy is not None and unavailable(exc):
            await forget(self._pool, self._proxy, exc)  # the release below finds it closed
        await self._inner.__aexit__(exc_type, exc, tb)


class PrimaryPool(asyncpg.Pool):
    """asyncpg's pool, with `acquire` dropping connections to a lost server.

    Every `async with pool.acquire()` in paygate and the pool's own `fetch`/`execute`
    go through `acquire`, so one override covers the workers, the request path and the
    gauges alike. Built by `gateway.db.pool.create_pool`."""

    def acquire(self, *, timeout: float | None = None) -> Any:
        return _Acquire(self, super().acquire(timeout=timeout))
