"""The start-up report of whether the primary replicates synchronously (the replicated
pair itself is exercised by tests/faults/test_failover.py)."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import pytest

from gateway.db.replication import Replication, replication
from gateway.observability import metrics
from gateway.observability.gauges import GaugeRefresher


@pytest.mark.parametrize(
    "names, level, synchronous",
    [
        ("ANY 1 (standby1)", "on", True),
        ("standby1", "remote_apply", True),
        ("*", "remote_write", True),
        ("standby1", "local", False),  # the session does not wait: asynchronous for paygate
        ("standby1", "off", False),
        ("", "on", False),
        ("  ", "on", False),
    ],
)
def test_synchronous_needs_a_named_standby_and_a_waiting_commit_level(
    names: str, level: str, synchronous: bool
) -> None:
    assert Replication(names, level, 1, 1, 0).synchronous is synchronous


def test_the_description_says_what_a_failover_would_cost() -> None:
    assert Replication("s1", "on", 1, 1, 0).describe().startswith("synchronous: a failover")
    assert "no synchronous standby is connected" in Replication("s1", "on", 0, 0, 0).describe()
    assert (
        Replication("", "on", 2, 0, 0)
        .describe()
        .startswith("asynchronous: a failover can lose acknowledged payments")
    )
    assert Replication("", "on", 0, 0, 0).describe().startswith("no standby streams")
    assert "not visible to this role" in Replication("s1", "on", 1, 0, 1).describe()


async def test_a_lone_server_reports_no_standby(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        found = await replication(conn)
        assert found == Replication("", "on", 0, 0, 0)
        await conn.execute("SET synchronous_commit = local")
        assert (await replication(conn)).commit_level == "local"  # the session's own level
        await conn.execute("RESET synchronous_commit")


async def test_start_up_logs_and_gauges_it(db: asyncpg.Pool, caplog: Any) -> None:
    refresher = GaugeRefresher(db)
    metrics.db_synchronous_replication.set(1)
    with caplog.at_level(logging.INFO, logger="paygate.observability"):
        found = await refresher.report_replication()
    assert found is not None and not found.synchronous
    assert metrics.db_synchronous_replication._value.get() == 0
    assert any("database replication: no standby" in r.getMessage() for r in caplog.records)
