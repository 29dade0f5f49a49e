"""`paygate partitions status` ends with the retention table: each retained table's rows,
size, oldest data kept, what retention keeps from and what the next run removes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.conftest import make_settings
from workers.cli import main as cli
from workers.cli import partitions


async def test_status_shows_each_table_against_its_retention(
    stack: Any, db: asyncpg.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    await db.executemany(
        "INSERT INTO payment_service.payment_references"
        " (reference_number, payment_id, payment_date, payload_hash, created_at)"
        " VALUES ($1, $2, '2026-01-01', 'h', $3)",
        [(f"ref-{age}", uuid.uuid4(), now - timedelta(days=age)) for age in (91, 95, 2)],
    )
    args = cli.build_parser().parse_args(["partitions", "status"])
    assert await partitions.run(args, make_settings(stack)) == 0
    out = capsys.readouterr().out
    _, kept = out.split("\n\n")
    head, *lines = kept.strip().splitlines()
    assert head.split() == ["TABLE", "ROWS", "SIZE", "OLDEST", "KEPT", "KEEPS", "FROM",
                            "RETENTION", "NEXT", "RUN"]  # fmt: skip
    by_table = {line.split()[0]: line for line in lines}
    assert list(by_table) == ["payments", "webhook_events", "audit_log", "payment_references"]
    refs = by_table["payment_references"]
    assert refs.split()[1] == "3"
    assert "90 days (REFERENCE_CACHE_TTL_DAYS)" in refs
    assert refs.endswith("delete 2 expired references")
    assert "12 months (PARTITION_RETENTION_MONTHS)" in by_table["payments"]
    assert by_table["payments"].endswith("nothing")
    assert "empty" in by_table["payments"]  # no payment yet: no oldest data
