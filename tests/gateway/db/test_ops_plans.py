"""Every query the ops API runs is served by an index (tests/ops_plans.py says why a
CI-sized table carries over to bench volumes; `python -m tests.ops_plans` runs the same
check at a million payments)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests import ops_plans
from tests.conftest import make_settings
from tests.stack import TestStack as Stack
from workers.cli.migrate import prepare_database

PAYMENTS = 50_000


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="module")
async def planned(stack: Stack) -> AsyncIterator[tuple[asyncpg.Connection, ops_plans.Sample]]:
    """A database of its own (the shared one is truncated per test), filled once."""
    name = f"plans_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(stack.database_url)
    await admin.execute(f"CREATE DATABASE {name}")
    url = _with_database(stack.database_url, name)
    try:
        await prepare_database(make_settings(stack, database_url=url))
        conn = await asyncpg.connect(url)
        try:
            yield conn, await ops_plans.fill(conn, PAYMENTS)
        finally:
            await conn.close()
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()


_NO_ROWS = ops_plans.Sample(uuid.uuid4(), "", "", "", 0, uuid.uuid4(), 0, datetime.now(UTC))
QUERY_NAMES = [q.name for q in ops_plans.queries(_NO_ROWS)]


@pytest.mark.parametrize("name", QUERY_NAMES)
async def test_the_query_is_served_by_an_index(
    planned: tuple[asyncpg.Connection, ops_plans.Sample], name: str
) -> None:
    conn, sample = planned
    [query] = [q for q in ops_plans.queries(sample) if q.name == name]
    plan = await ops_plans.plan(conn, query)
    empty = await ops_plans.empty_relations(conn)
    assert ops_plans.problems(plan, empty, query.index_cond) == [], ops_plans.render(plan)


def test_the_check_finds_a_sequential_scan_and_a_big_sort() -> None:
    seq = {"Node Type": "Seq Scan", "Relation Name": "payments_2026_11", "Plan Rows": 10}
    sort = {"Node Type": "Sort", "Plans": [{"Node Type": "Index Scan", "Plan Rows": 50_000,
                                            "Relation Name": "payments_2026_10"}]}  # fmt: skip
    small = {"Node Type": "Seq Scan", "Relation Name": "schema_migrations", "Plan Rows": 9}
    empty = {"Node Type": "Seq Scan", "Relation Name": "payments_2027_03", "Plan Rows": 1}
    tree = {"Node Type": "Limit", "Plans": [seq, sort, small, empty]}
    assert ops_plans.problems(tree, frozenset({"payments_2027_03"})) == [
        "sequential scan of payments_2026_11",
        "sort of ~50000 rows",
    ]
    walk = {"Node Type": "Index Scan", "Index Name": "payments_2026_11_created_at_idx",
            "Filter": "(lower((reference_number)::text) ~>=~ 'ref-1'::text)"}  # fmt: skip
    assert ops_plans.problems(walk, index_cond="lower((reference_number)::text) ~>=~") == [
        "no index condition 'lower((reference_number)::text) ~>=~'"
    ]
