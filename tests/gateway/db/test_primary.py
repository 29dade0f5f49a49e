"""A server that stops taking writes (SQLSTATE 25006) or goes away: its connections are
dropped, a webhook in flight gets 503 with Retry-After, and recording resumes by itself
once a writable server answers again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from gateway.db import primary
from gateway.db.pool import create_pool
from tests.conftest import make_settings, wait_for
from tests.stack import TestStack as Stack
from tests.webhooks import payment_doc, post_webhook


@pytest.mark.parametrize(
    "exc, lost",
    [
        (asyncpg.ReadOnlySQLTransactionError("read-only"), True),
        (asyncpg.AdminShutdownError("terminating"), True),
        (asyncpg.CannotConnectNowError("in recovery"), True),
        (asyncpg.ConnectionDoesNotExistError("closed mid-operation"), True),
        (asyncpg.TargetServerAttributeNotMatched("no read-write host"), True),
        (ConnectionRefusedError(), True),
        (TimeoutError(), False),
        (asyncpg.TooManyConnectionsError("too many"), False),
    ],
)
def test_what_counts_as_a_lost_server_and_what_as_unavailable(
    exc: BaseException, lost: bool
) -> None:
    assert primary.lost_server(exc) is lost
    assert primary.unavailable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.UniqueViolationError("dup"),
        asyncpg.DataError("bad"),
        asyncpg.SerializationError("retry"),
        ValueError("a bug"),
    ],
)
def test_errors_about_the_data_or_the_code_are_neither(exc: BaseException) -> None:
    assert not primary.lost_server(exc)
    assert not primary.unavailable(exc)


@pytest.fixture
async def own_pool(stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(make_settings(stack), min_size=2, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


async def _backend_pid(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT pg_backend_pid()"))


async def test_a_read_only_refusal_drops_the_connection_and_renews_the_pool(
    own_pool: asyncpg.Pool,
) -> None:
    first = await own_pool.acquire()
    second = await own_pool.acquire()
    pids = {await first.fetchval("SELECT pg_backend_pid()")}
    pids.add(await second.fetchval("SELECT pg_backend_pid()"))
    await own_pool.release(second)  # idle, opened to the same server
    await own_pool.release(first)

    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        async with own_pool.acquire() as conn:
            await conn.execute("SET default_transaction_read_only = on")  # what a demotion does
            await conn.execute("CREATE TEMP TABLE refused (x int)")

    # Both connections are gone: the one that failed and the idle one beside it.
    async with own_pool.acquire() as a, own_pool.acquire() as b:
        after = {await a.fetchval("SELECT pg_backend_pid()")}
        after.add(await b.fetchval("SELECT pg_backend_pid()"))
        assert await a.fetchval("SHOW default_transaction_read_only") == "off"
    assert len(after) == 2 and not pids & after


async def test_a_data_error_keeps_the_connection(own_pool: asyncpg.Pool) -> None:
    before = await _backend_pid(own_pool)
    with pytest.raises(asyncpg.DataError):
        async with own_pool.acquire() as conn:
            await conn.fetchval("SELECT 'x'::int")
    assert await _backend_pid(own_pool) == before


async def test_pool_helpers_go_through_the_same_drop(own_pool: asyncpg.Pool) -> None:
    async with own_pool.acquire() as conn:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        # The server's refusal, as a server that no longer takes writes sends it.
        await own_pool.execute(
            "DO $$BEGIN RAISE EXCEPTION 'read-only' USING ERRCODE = '25006'; END$$"
        )
    assert pid not in {await _backend_pid(own_pool) for _ in range(2)}


async def test_a_connection_whose_server_end_died_renews_the_pool(
    own_pool: asyncpg.Pool, db: asyncpg.Pool
) -> None:
    """asyncpg hands a pool connection whose socket died back to the pool by itself (the
    proxy then refuses every call): that too is a lost server, and dropping the proxy
    again must not raise."""
    async with own_pool.acquire() as idle:
        idle_pid = await idle.fetchval("SELECT pg_backend_pid()")
    with pytest.raises(asyncpg.InterfaceError):
        async with own_pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            await db.execute("SELECT pg_terminate_backend($1)", pid)  # what a dying server does

            async def detached() -> bool:
                return not primary.usable(conn)

            await wait_for(detached, timeout=10, interval=0.01)
            await conn.fetchval("SELECT 1")
    lost = await primary.forget(own_pool, conn, asyncpg.ConnectionDoesNotExistError("gone"))
    assert lost
    assert not {pid, idle_pid} & {await _backend_pid(own_pool) for _ in range(2)}


async def _set_server_read_only(stack: Stack, on: bool) -> None:
    conn = await asyncpg.connect(stack.database_url)
    try:
        if on:
            await conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        else:
            await conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def test_a_server_turned_read_only_gets_503s_then_recording_resumes(
    make_client: Any, db: asyncpg.Pool, stack: Stack
) -> None:
    # The failover-ready DSN: asyncpg refuses a read-only host for new connections.
    url = stack.database_url + "?target_session_attrs=read-write"
    client = await make_client(database_url=url, write_concurrency=2)
    status, _, _ = await post_webhook(client, payment_doc())
    assert status == 201  # the writer now holds connections opened to a writable server

    answers: list[tuple[int, str, dict[str, Any], dict[str, str]]] = []

    async def refused() -> bool:
        doc = payment_doc()
        status, body, headers = await post_webhook(client, doc)
        answers.append((status, doc["reference_number"], body, headers))
        return status == 503

    await _set_server_read_only(stack, True)
    try:
        await wait_for(refused, timeout=15, interval=0.05)
        status, ref, body, headers = answers[-1]
        assert body["error"] == "database_unavailable"
        assert int(headers["Retry-After"]) >= 1
    finally:
        await _set_server_read_only(stack, False)

    async def recorded() -> bool:
        doc = payment_doc()
        status, body, _ = await post_webhook(client, doc)
        answers.append((status, doc["reference_number"], body, {}))
        return status == 201

    await wait_for(recorded, timeout=15, interval=0.1)
    assert {s for s, *_ in answers} <= {201, 503}
    for status, ref, body, _ in answers:
        stored = await db.fetchval(
            "SELECT id::text FROM payment_service.payments WHERE reference_number = $1", ref
        )
        if status == 201:
            assert stored == body["payment_id"]
        else:
            assert stored is None
