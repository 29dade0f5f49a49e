"""Dead letters: listing them, replaying some or all, and the audit trail a replay leaves."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from gateway.config import Settings
from gateway.db.dead_letters import count as count_dead_letters
from gateway.db.dead_letters import list_dead_letters, replay
from workers.cli import main as cli
from workers.cli.commands import COMMANDS


async def add_event(pool: asyncpg.Pool, key: str, *, dead: bool, error: str | None = None) -> int:
    return int(
        await pool.fetchval(
            """INSERT INTO payment_service.outbox
               (event_id, event_type, topic, key, payload, attempts, last_error, dead_lettered_at)
               VALUES ($1, 'payment.recorded', 'payment.events', $2, $3, $4, $5,
                       CASE WHEN $6 THEN now() END)
               RETURNING id""",
            uuid.uuid4(),
            key,
            b'{"secret-free": true}',
            10 if dead else 0,
            error,
            dead,
        )
    )


async def row(pool: asyncpg.Pool, event: int) -> asyncpg.Record:
    found = await pool.fetchrow("SELECT * FROM payment_service.outbox WHERE id = $1", event)
    assert found is not None
    return found


async def test_list_shows_only_dead_letters_oldest_first(db: asyncpg.Pool) -> None:
    first = await add_event(db, "R-1", dead=True, error="MessageSizeTooLargeError: too big")
    await add_event(db, "R-2", dead=False)
    second = await add_event(db, "R-3", dead=True, error="KafkaTimeoutError")

    listed = await list_dead_letters(db)

    assert [d["id"] for d in listed] == [first, second]
    assert listed[0]["key"] == "R-1"
    assert listed[0]["attempts"] == 10
    assert listed[0]["last_error"] == "MessageSizeTooLargeError: too big"
    assert listed[0]["dead_lettered_at"] is not None
    assert "payload" not in listed[0]
    assert [d["id"] for d in await list_dead_letters(db, limit=1)] == [first]
    assert await count_dead_letters(db) == 2


async def test_replay_by_id_resets_the_row_and_audits_it(db: asyncpg.Pool) -> None:
    target = await add_event(db, "R-1", dead=True, error="MessageSizeTooLargeError: too big")
    other = await add_event(db, "R-2", dead=True)

    assert len(await replay(db, [target], all_=False, actor="ops:alice")) == 1

    reset = await row(db, target)
    assert reset["dead_lettered_at"] is None
    assert reset["attempts"] == 0 and reset["last_error"] is None
    assert await db.fetchval(
        "SELECT next_attempt_at <= now() FROM payment_service.outbox WHERE id = $1", target
    )
    assert (await row(db, other))["dead_lettered_at"] is not None
    audit = await db.fetch("SELECT * FROM payment_service.audit_log WHERE action = 'dlq_replay'")
    assert len(audit) == 1
    assert audit[0]["actor"] == "ops:alice"
    assert audit[0]["reference_number"] == "R-1"
    assert audit[0]["details"]["outbox_id"] == target
    assert audit[0]["details"]["event_id"] == str(reset["event_id"])
    # why it died survives the reset, in the audit row
    assert audit[0]["details"]["last_error"] == "MessageSizeTooLargeError: too big"
    assert audit[0]["details"]["attempts"] == 10


async def test_replay_all_and_ids_that_are_not_dead_letters(db: asyncpg.Pool) -> None:
    dead = [await add_event(db, f"R-{i}", dead=True) for i in range(3)]
    alive = await add_event(db, "R-live", dead=False)

    assert len(await replay(db, [alive, 999_999], all_=False, actor="cli:test")) == 0
    assert len(await replay(db, (), all_=True, actor="cli:test")) == 3
    assert len(await replay(db, dead, all_=False, actor="cli:test")) == 0  # already replayed

    assert await count_dead_letters(db) == 0
    assert (
        await db.fetchval(
            "SELECT count(*) FROM payment_service.audit_log WHERE action = 'dlq_replay'"
        )
        == 3
    )


async def test_replay_with_nothing_selected_does_nothing(db: asyncpg.Pool) -> None:
    await add_event(db, "R-1", dead=True)
    assert len(await replay(db, [], all_=False, actor="cli:test")) == 0
    assert await count_dead_letters(db) == 1


async def test_replay_requires_an_actor(db: asyncpg.Pool) -> None:
    await add_event(db, "R-1", dead=True)
    with pytest.raises(ValueError):
        await replay(db, (), all_=True, actor="")


async def run_cli(argv: list[str], settings: Settings) -> int:
    args = cli.build_parser().parse_args(argv)
    run = next(c.run for c in COMMANDS if c.name == args.command)
    return await run(args, settings)


async def test_cli_lists_and_replays(
    db: asyncpg.Pool, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    first = await add_event(db, "R-CLI-1", dead=True, error="MessageSizeTooLargeError: big")
    await add_event(db, "R-CLI-2", dead=True)

    assert await run_cli(["dlq", "list"], settings) == 0
    out = capsys.readouterr().out
    assert "R-CLI-1" in out and "R-CLI-2" in out and "MessageSizeTooLargeError" in out

    assert await run_cli(["dlq", "replay", str(first), "--actor", "cli:bob"], settings) == 0
    assert "replayed 1 event" in capsys.readouterr().out
    assert await run_cli(["dlq", "replay"], settings) == 2
    assert await run_cli(["dlq", "replay", "--all"], settings) == 0
    assert await count_dead_letters(db) == 0
    actors: list[Any] = await db.fetch(
        "SELECT actor FROM payment_service.audit_log WHERE action = 'dlq_replay' ORDER BY id"
    )
    assert actors[0]["actor"] == "cli:bob"
    assert actors[1]["actor"].startswith("cli")


async def test_cli_replay_of_an_id_that_is_no_dead_letter_fails_and_names_it(
    db: asyncpg.Pool, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = await add_event(db, "R-CLI-3", dead=True)
    assert await run_cli(["dlq", "replay", "999999"], settings) == 1
    out, err = capsys.readouterr()
    assert out.strip() == "replayed 0 event(s)"
    assert err.strip() == "paygate dlq replay: not dead letters, left alone: 999999"
    # One known and one unknown: the known one is replayed, the exit code still says no.
    assert await run_cli(["dlq", "replay", str(dead), "999999"], settings) == 1
    out, err = capsys.readouterr()
    assert out.strip() == f"replayed 1 event(s): {dead}" and "999999" in err
    assert await count_dead_letters(db) == 0
