"""Supported server versions: a server older than 15 is refused by name, and each
version-dependent SQL choice is pinned."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from typing import Any

import asyncpg
import pytest

from gateway.db.migrations import migrate
from gateway.db.pool import create_pool
from gateway.db.server import (
    MINIMUM_SERVER_VERSION,
    PORTABLE_UUIDV7,
    ServerFunctions,
    UnsupportedServer,
    check_supported,
    server_version,
    version_name,
)
from gateway.errors import ConfigError
from tests.conftest import make_settings


def test_a_server_older_than_15_is_refused_with_both_versions() -> None:
    with pytest.raises(UnsupportedServer) as info:
        check_supported(140011)
    assert str(info.value) == "PostgreSQL 14.11 found; paygate needs PostgreSQL 15 or newer"
    assert isinstance(info.value, ConfigError)  # the CLI prints it as one line, exit 2
    check_supported(MINIMUM_SERVER_VERSION)
    check_supported(180001)


def test_version_names() -> None:
    assert version_name(150012) == "15.12"
    assert version_name(180000) == "18.0"


@pytest.mark.parametrize(
    ("version", "new_uuid", "json_check"),
    [
        (150000, PORTABLE_UUIDV7, "payment_service.is_valid_jsonb(x)"),
        (160004, PORTABLE_UUIDV7, "pg_input_is_valid(x, 'jsonb')"),
        (170000, PORTABLE_UUIDV7, "pg_input_is_valid(x, 'jsonb')"),
        (180000, "uuidv7()", "pg_input_is_valid(x, 'jsonb')"),
    ],
)
def test_each_version_dependent_choice(version: int, new_uuid: str, json_check: str) -> None:
    server = ServerFunctions(version)
    assert server.new_uuid == new_uuid
    assert server.is_valid_jsonb("x") == json_check


async def test_the_pool_refuses_a_server_below_the_minimum(stack: Any, db: asyncpg.Pool) -> None:
    major = stack.postgres_major
    with pytest.raises(UnsupportedServer, match=rf"^PostgreSQL {major}\.\d+ found; paygate "
                       rf"needs PostgreSQL {major + 1} or newer$"):  # fmt: skip
        await create_pool(make_settings(stack), minimum_server_version=(major + 1) * 10000)


async def test_migrate_refuses_a_server_below_the_minimum(stack: Any, db: asyncpg.Pool) -> None:
    major = stack.postgres_major
    with pytest.raises(UnsupportedServer, match=rf"needs PostgreSQL {major + 1} or newer"):
        await migrate(stack.database_url, minimum_server_version=(major + 1) * 10000)


def test_paygate_migrate_prints_one_line_for_an_unsupported_server(stack: Any) -> None:
    # A real server, a real `paygate migrate`; the minimum is raised past it through the
    # module the command reads, as an older server would fail it.
    major = stack.postgres_major
    code = (
        "import sys, gateway.db.server as s\n"
        f"s.MINIMUM_SERVER_VERSION = {(major + 1) * 10000}\n"
        "from workers.cli.main import main\n"
        "sys.exit(main(['migrate']))\n"
    )
    env = dict(os.environ, DATABASE_URL=stack.database_url)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert re.fullmatch(
        rf"paygate: configuration error: PostgreSQL {major}\.\d+ found; "
        rf"paygate needs PostgreSQL {major + 1} or newer",
        lines[0],
    ), lines


AWKWARD_JSON = ["{}", '{"a": 1}', '"x"', "nope", "{", "[1, 2]", '"\\u0000"', "1e999999", ""]


async def test_the_portable_json_check_answers_on_every_server(db: asyncpg.Pool) -> None:
    rows = await db.fetch(
        "SELECT v, payment_service.is_valid_jsonb(v) AS ok FROM unnest($1::text[]) AS v",
        AWKWARD_JSON,
    )
    answers = {r["v"]: r["ok"] for r in rows}
    assert answers["{}"] and answers['{"a": 1}'] and answers['"x"'] and answers["[1, 2]"]
    assert not answers["nope"] and not answers["{"] and not answers[""]
    assert await db.fetchval("SELECT payment_service.is_valid_jsonb(NULL)") is None


@pytest.mark.postgres(min=16)
async def test_the_portable_json_check_agrees_with_pg_input_is_valid(db: asyncpg.Pool) -> None:
    rows = await db.fetch(
        "SELECT v, payment_service.is_valid_jsonb(v) AS ours, pg_input_is_valid(v, 'jsonb') AS pg"
        " FROM unnest($1::text[]) AS v",
        AWKWARD_JSON,
    )
    assert [(r["v"], r["ours"]) for r in rows] == [(r["v"], r["pg"]) for r in rows]


async def test_the_chosen_variant_runs_on_this_server(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        server = ServerFunctions(await server_version(conn))
        assert await conn.fetchval(f"SELECT {server.is_valid_jsonb(repr('{}'))}") is True
        assert await conn.fetchval(f"SELECT ({server.new_uuid}) IS NOT NULL") is True


async def test_the_portable_uuidv7_is_a_v7_of_now(db: asyncpg.Pool) -> None:
    before_ms = int(time.time() * 1000)
    ids = [
        uuid.UUID(str(r[0]))
        for r in await db.fetch(f"SELECT {PORTABLE_UUIDV7} FROM generate_series(1, 200)")
    ]
    after_ms = int(time.time() * 1000)
    assert len(set(ids)) == 200
    assert {i.version for i in ids} == {7} and {i.variant for i in ids} == {uuid.RFC_4122}
    stamps = {int.from_bytes(i.bytes[:6], "big") for i in ids}
    assert before_ms - 5 <= min(stamps) and max(stamps) <= after_ms + 5
