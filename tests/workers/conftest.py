"""Fixtures shared by the worker tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from workers.outbox import OutboxRelay


@pytest.fixture
async def relays(db: asyncpg.Pool) -> AsyncIterator[list[OutboxRelay]]:
    """Relays a test starts; all stopped at the end, whatever happened."""
    made: list[OutboxRelay] = []
    yield made
    for r in made:
        await r.stop(grace=5)
