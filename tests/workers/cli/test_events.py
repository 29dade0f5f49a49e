"""`paygate events tail` as a user runs it after `make run`: webhooks posted through the
app, published by the relay, read back by the command as JSON lines."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import pytest

from gateway import appkeys
from gateway.config import Settings
from tests import stack as stack_module
from tests.conftest import wait_for
from tests.webhooks import payment_doc, post_webhook
from tests.workers.test_outbox import relay_settings, start_relay
from workers.cli.events import record_line
from workers.outbox import OutboxRelay

DEADLINE_S = 60


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DATABASE_"))}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        KAFKA_TOPIC=settings.kafka_topic,
        LOG_LEVEL="WARNING",
    )
    return env


async def _tail(settings: Settings, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.cli", "events", "tail", *args,
        env=_env(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def _finish(proc: asyncio.subprocess.Process) -> tuple[int, list[dict[str, Any]], str]:
    try:
        out, err = await asyncio.wait_for(proc.communicate(), DEADLINE_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("paygate events tail did not stop") from None
    lines = [orjson.loads(line) for line in out.splitlines()]
    return proc.returncode or 0, lines, err.decode()


async def _post_published(
    client: Any, db: asyncpg.Pool, count: int, **fields: Any
) -> dict[str, str]:
    """Post `count` webhooks; wait until the relay has published them all. ref -> id."""
    posted: dict[str, str] = {}
    for _ in range(count):
        doc = payment_doc(**fields)
        status, body, _ = await post_webhook(client, doc)
        assert status == 201
        posted[doc["reference_number"]] = body["payment_id"]

    async def drained() -> bool:
        return await db.fetchval("SELECT count(*) FROM payment_service.outbox") == 0

    await wait_for(drained, timeout=30)
    return posted


@pytest.fixture
async def published(
    make_client: Callable[..., Awaitable[Any]],
    db: asyncpg.Pool,
    stack: stack_module.TestStack,
    relays: list[OutboxRelay],
) -> tuple[Settings, Any]:
    settings = relay_settings(stack)
    client = await make_client(settings)
    await start_relay(relays, db, settings, wakeup=client.server.app[appkeys.OUTBOX_WAKE])
    return settings, client


async def test_five_webhooks_come_out_as_five_json_lines(
    published: tuple[Settings, Any], db: asyncpg.Pool
) -> None:
    settings, client = published
    posted = await _post_published(client, db, 5)

    code, lines, err = await _finish(await _tail(settings, "--from-beginning", "--max", "5"))

    assert code == 0, err
    assert len(lines) == 5
    assert {line["key"] for line in lines} == set(posted)
    for line in lines:
        assert set(line) == {"key", "headers", "value", "partition", "offset"}
        assert line["headers"]["event_type"] == "payment.recorded"
        assert line["headers"]["event_id"] == line["value"]["event_id"]
        assert line["value"]["payment"]["id"] == posted[line["key"]]


async def test_from_beginning_stops_at_the_end_and_key_picks_one_payment(
    published: tuple[Settings, Any], db: asyncpg.Pool
) -> None:
    settings, client = published
    posted = await _post_published(client, db, 4)
    wanted = sorted(posted)[1]

    code, everything, err = await _finish(await _tail(settings, "--from-beginning"))
    assert code == 0, err
    assert sorted(line["key"] for line in everything) == sorted(posted)

    code, one, err = await _finish(await _tail(settings, "--from-beginning", "--key", wanted))
    assert code == 0, err
    assert [line["key"] for line in one] == [wanted]
    assert one[0]["value"]["payment"]["id"] == posted[wanted]


async def test_without_from_beginning_only_new_events_are_printed(
    published: tuple[Settings, Any], db: asyncpg.Pool
) -> None:
    settings, client = published
    old = await _post_published(client, db, 3)
    proc = await _tail(settings, "--max", "2")
    assert proc.stderr is not None
    banner = await asyncio.wait_for(proc.stderr.readline(), DEADLINE_S)
    assert b"waiting" in banner  # assigned and positioned at the end: now post

    new = await _post_published(client, db, 2)
    code, lines, err = await _finish(proc)

    assert code == 0, err
    assert {line["key"] for line in lines} == set(new)
    assert not set(old) & {line["key"] for line in lines}


async def test_an_unreachable_broker_is_one_line_and_exit_1() -> None:
    from workers.cli.devstack import free_port

    port = free_port()
    settings = Settings(kafka_bootstrap_servers=f"127.0.0.1:{port}", kafka_topic="t")
    code, lines, err = await _finish(await _tail(settings, "--from-beginning"))
    assert code == 1
    assert lines == []
    where = f"127.0.0.1:{port} (connection refused)"
    assert err == f"paygate: cannot reach KAFKA_BOOTSTRAP_SERVERS at {where}\n"


class _Record:
    def __init__(self, value: bytes | None, key: bytes | None = b"K") -> None:
        self.key, self.value, self.headers = key, value, [("event_type", b"x")]
        self.partition, self.offset = 2, 7


def test_record_line_keeps_a_value_that_is_not_json_as_text() -> None:
    assert orjson.loads(record_line(_Record(b'{"a": 1}'))) == {
        "key": "K", "headers": {"event_type": "x"}, "value": {"a": 1}, "partition": 2, "offset": 7,
    }  # fmt: skip
    assert orjson.loads(record_line(_Record(b"not json")))["value"] == "not json"
    assert orjson.loads(record_line(_Record(None, key=None)))["key"] is None
