"""Migrations: applied once, in order, safe to run twice and from two runners at once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg

from gateway.db.migrations import discover, migrate


async def test_repo_migrations_are_recorded_and_rerun_is_a_no_op(stack: Any) -> None:
    assert await migrate(stack.database_url) == []
    conn = await asyncpg.connect(stack.database_url)
    try:
        versions = [
            r["version"]
            for r in await conn.fetch(
                "SELECT version FROM payment_service.schema_migrations ORDER BY version"
            )
        ]
    finally:
        await conn.close()
    assert versions == [m.version for m in discover()]


async def test_concurrent_runners_apply_each_file_once(stack: Any, tmp_path: Path) -> None:
    schema = "mig_test_concurrent"
    (tmp_path / "001_a.sql").write_text(
        f"CREATE SCHEMA {schema}; CREATE TABLE {schema}.t (x int);"
        f" INSERT INTO {schema}.t VALUES (1);"
    )
    (tmp_path / "002_b.sql").write_text(f"INSERT INTO {schema}.t VALUES (2);")
    conn = await asyncpg.connect(stack.database_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS payment_service.schema_migrations"
            " (version TEXT PRIMARY KEY, checksum TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        await conn.execute(
            "DELETE FROM payment_service.schema_migrations WHERE version IN ('001_a', '002_b')"
        )
        results = await asyncio.gather(*(migrate(stack.database_url, tmp_path) for _ in range(3)))
        applied = sorted(v for r in results for v in r)
        assert applied == ["001_a", "002_b"]
        assert [r["x"] for r in await conn.fetch(f"SELECT x FROM {schema}.t ORDER BY x")] == [1, 2]
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.execute(
            "DELETE FROM payment_service.schema_migrations WHERE version IN ('001_a', '002_b')"
        )
        await conn.close()


async def test_a_failing_file_rolls_back_alone(stack: Any, tmp_path: Path) -> None:
    schema = "mig_test_fail"
    (tmp_path / "001_a.sql").write_text(f"CREATE SCHEMA {schema};")
    (tmp_path / "002_b.sql").write_text(f"CREATE TABLE {schema}.t (x int); SELECT 1/0;")
    conn = await asyncpg.connect(stack.database_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        try:
            await migrate(stack.database_url, tmp_path)
        except asyncpg.DivisionByZeroError:
            pass
        else:
            raise AssertionError("the failing migration did not raise")
        assert await conn.fetchval("SELECT to_regclass($1)", f"{schema}.t") is None
        recorded = await conn.fetch(
            "SELECT version FROM payment_service.schema_migrations"
            " WHERE version IN ('001_a', '002_b')"
        )
        assert [r["version"] for r in recorded] == ["001_a"]
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.execute(
            "DELETE FROM payment_service.schema_migrations WHERE version IN ('001_a', '002_b')"
        )
        await conn.close()
