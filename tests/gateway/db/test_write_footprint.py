"""What recording a payment writes into indexes, read back from the WAL the recording
made (pg_walinspect). Every index entry is a WAL record, and on a random key such as the
reference a share of page splits too: ~230 bytes a payment for such an index
(`python -m bench.write_volume` measures the bytes; issue 31)."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from typing import Any

import pytest

from tests.webhooks import payment_doc, post_webhook

PAYMENTS = 40
_REL = re.compile(r"rel \d+/\d+/(\d+)")


async def _index_entries(db: Any, start: int, end: int) -> Counter[str]:
    """Leaf entries written to each index between two WAL positions, by index name."""
    rows = await db.fetch(
        "SELECT block_ref FROM pg_get_wal_records_info($1::pg_lsn, $2::pg_lsn)"
        " WHERE resource_manager = 'Btree' AND record_type = 'INSERT_LEAF'",
        start,
        end,
    )
    by_node = Counter(int(m.group(1)) for r in rows if (m := _REL.search(r["block_ref"] or "")))
    names = await db.fetch(
        "SELECT relfilenode, relname FROM pg_class WHERE relfilenode = ANY($1::oid[])",
        list(by_node),
    )
    return Counter({r["relname"]: by_node[r["relfilenode"]] for r in names})


async def test_a_payment_writes_its_reference_into_two_indexes(client: Any, db: Any) -> None:
    # The reference table's key (the dedup truth) and one index on payments (lookups and
    # prefix search); not also an index of the raw deliveries, the audit log or a second
    # one on payments.
    if not await db.fetchval(
        "SELECT true FROM pg_available_extensions WHERE name = 'pg_walinspect'"
    ):
        pytest.skip("this PostgreSQL build ships without pg_walinspect (contrib)")
    await db.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
    start = await db.fetchval("SELECT pg_current_wal_insert_lsn()")
    answers = await asyncio.gather(
        *(post_webhook(client, payment_doc(cif=f"CIF-{i}")) for i in range(PAYMENTS))
    )
    assert [status for status, _, _ in answers] == [201] * PAYMENTS
    end = await db.fetchval("SELECT pg_current_wal_insert_lsn()")

    entries = await _index_entries(db, start, end)
    keyed_on_reference = {
        r["relname"]
        for r in await db.fetch(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE pg_get_indexdef(i.indexrelid) ~ '\\(.*reference_number'"
        )
    }
    per_payment = {name: n / PAYMENTS for name, n in entries.items() if name in keyed_on_reference}
    assert sorted(per_payment.values()) == [1.0, 1.0], per_payment
    assert any(name.startswith("payment_references") for name in per_payment), per_payment
