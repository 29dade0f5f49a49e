"""A URL pointing at nothing: `paygate run` and `paygate dev` say so in one line naming the
variable and the host:port, never the password, and exit non-zero (before: a 50-line
ConnectionRefusedError traceback naming neither)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from workers.cli.devstack import free_port
from workers.cli.reachability import (
    Address,
    Unreachable,
    database_addresses,
    kafka_addresses,
    redis_addresses,
    require_reachable,
)

PASSWORD = "s3cr3t-pw"


def test_addresses_are_read_from_every_url_shape_without_credentials() -> None:
    assert database_addresses(f"postgresql://app:{PASSWORD}@db.example:6432/pay") == [
        Address("db.example", 6432)
    ]
    assert database_addresses("postgres://u@a:5432,b/pay?target_session_attrs=read-write") == [
        Address("a", 5432), Address("b", 5432),
    ]  # fmt: skip
    assert database_addresses("postgresql://u@[::1]:5433/pay") == [Address("::1", 5433)]
    assert database_addresses("postgresql:///pay?host=/run/postgresql&port=5433") == [
        Address("/run/postgresql/.s.PGSQL.5433")
    ]
    assert database_addresses("postgresql:///pay") == []  # the client's defaults: not checked
    assert redis_addresses(f"rediss://:{PASSWORD}@cache:6380/0") == [Address("cache", 6380)]
    assert redis_addresses("redis://cache") == [Address("cache", 6379)]
    assert redis_addresses("unix:///run/redis.sock") == [Address("/run/redis.sock")]
    assert kafka_addresses("k1:9093, SASL_SSL://k2,k3:19092") == [
        Address("k1", 9093), Address("k2", 9092), Address("k3", 19092),
    ]  # fmt: skip
    assert str(Address("::1", 5433)) == "[::1]:5433"


async def test_one_answering_host_is_enough_and_every_failure_is_named() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    live = server.sockets[0].getsockname()[1]
    dead = free_port()
    try:
        await require_reachable(
            [("DATABASE_URL", f"postgresql://u@127.0.0.1:{dead},127.0.0.1:{live}/x")]
        )
        with pytest.raises(Unreachable) as caught:
            await require_reachable(
                [
                    ("DATABASE_URL", f"postgresql://u:{PASSWORD}@127.0.0.1:{live}/x"),
                    ("REDIS_URL", f"redis://:{PASSWORD}@127.0.0.1:{dead}/0"),
                    ("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{dead}"),
                ]
            )
    finally:
        server.close()
        await server.wait_closed()
    assert str(caught.value) == (
        f"cannot reach REDIS_URL at 127.0.0.1:{dead} (connection refused); "
        f"KAFKA_BOOTSTRAP_SERVERS at 127.0.0.1:{dead} (connection refused)"
    )


async def _paygate(command: str, data_dir: Path, **env: str) -> tuple[int, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("DATABASE_", "REDIS_", "KAFKA_", "PAYGATE_", "DB_"))}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.cli", command,
        env={**clean, "PORT": str(free_port()), "LOG_LEVEL": "WARNING",
             "PAYGATE_DATA_DIR": str(data_dir), **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"paygate {command} started instead of stopping") from None
    return proc.returncode or 0, err.decode()


def _one_line(err: str) -> str:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert PASSWORD not in err
    return err.strip()


async def test_run_with_a_database_url_pointing_at_nothing_says_so_in_one_line(
    tmp_path: Path,
) -> None:
    port = free_port()
    rc, err = await _paygate(
        "run", tmp_path, DATABASE_URL=f"postgresql://app:{PASSWORD}@127.0.0.1:{port}/pay"
    )
    assert rc == 1
    assert _one_line(err) == (
        f"paygate: cannot reach DATABASE_URL at 127.0.0.1:{port} (connection refused)"
    )


async def test_dev_with_a_redis_url_pointing_at_nothing_starts_nothing(tmp_path: Path) -> None:
    port = free_port()
    rc, err = await _paygate("dev", tmp_path, REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    assert rc == 1
    assert (
        _one_line(err)
        == f"paygate: cannot reach REDIS_URL at 127.0.0.1:{port} (connection refused)"
    )
    assert not (tmp_path / "postgres").exists()  # checked before any embedded server started


async def test_run_with_a_broker_pointing_at_nothing_names_only_the_broker(
    stack: Any, tmp_path: Path
) -> None:
    port = free_port()
    rc, err = await _paygate(
        "run",
        tmp_path,
        DATABASE_URL=stack.database_url,
        REDIS_URL=stack.redis_url,
        KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{port}",
    )
    assert rc == 1
    assert _one_line(err) == (
        f"paygate: cannot reach KAFKA_BOOTSTRAP_SERVERS at 127.0.0.1:{port} (connection refused)"
    )
