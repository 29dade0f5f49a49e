"""How a command finds the dev stack, without servers: what a variable given wins over,
what a dead stack's record is worth, the kept secrets and the banner's token command."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.config import Settings
from workers.cli import discovery
from workers.cli.devstack import free_port
from workers.cli.discovery import DevStack
from workers.cli.reachability import Unreachable


def settings_in(data: Path, **env: str) -> Settings:
    return Settings.from_env({"PAYGATE_DATA_DIR": str(data), **env})


def test_a_running_stacks_urls_fill_only_what_is_unset(tmp_path: Path) -> None:
    # A process whose command line says `dev`, standing in for `paygate dev`.
    dev = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "dev"])
    try:
        deadline = time.monotonic() + 10  # until the child has exec'd its command line
        while b"dev" not in Path(f"/proc/{dev.pid}/cmdline").read_bytes().split(b"\0"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        discovery.record(tmp_path, DevStack(dev.pid, "http://127.0.0.1:1",
                         "postgresql://postgres@127.0.0.1:2/p", "redis://127.0.0.1:3/0",
                         "127.0.0.1:4"))  # fmt: skip
        found, filled = discovery.with_dev_stack(
            settings_in(tmp_path, REDIS_URL="redis://cache:6379/0")
        )
    finally:
        dev.kill()
        dev.wait()
    assert found.database_url == "postgresql://postgres@127.0.0.1:2/p"
    assert found.kafka_bootstrap_servers == "127.0.0.1:4"
    assert found.redis_url == "redis://cache:6379/0"  # given: kept
    assert filled == {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"}


def test_a_dead_stacks_record_is_ignored_for_the_embedded_ports(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    discovery.record(tmp_path, DevStack(dead.pid, "http://x", "postgresql://postgres@h:1/p"))
    found, filled = discovery.with_dev_stack(settings_in(tmp_path, EMBEDDED_PG_PORT="5999"))
    assert found.database_url == "postgresql://postgres@127.0.0.1:5999/paygate"
    assert "DATABASE_URL" in filled


def test_a_variable_given_always_wins(tmp_path: Path) -> None:
    discovery.dev_admin_secret(tmp_path)
    given = settings_in(
        tmp_path,
        DATABASE_URL="postgresql://app@db:5432/pay",
        ADMIN_JWT_SECRET="x" * 40,
    )
    found, filled = discovery.with_dev_stack(given)
    assert (found.database_url, found.admin_jwt_secret) == (
        "postgresql://app@db:5432/pay",
        "x" * 40,
    )
    assert "DATABASE_URL" not in filled and "ADMIN_JWT_SECRET" not in filled


def test_the_admin_secret_is_made_once_private_and_long_enough(tmp_path: Path) -> None:
    first = discovery.dev_admin_secret(tmp_path / "data")
    assert discovery.dev_admin_secret(tmp_path / "data") == first
    assert len(first.encode()) >= 32  # the ops API refuses a shorter one
    mode = (tmp_path / "data" / discovery.ADMIN_SECRET_FILE).stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    found, _ = discovery.with_dev_stack(settings_in(tmp_path / "data"))
    assert found.admin_jwt_secret == first


def test_forget_removes_only_its_own_record(tmp_path: Path) -> None:
    discovery.record(tmp_path, DevStack(12345, "http://x"))
    discovery.forget(tmp_path, 999)
    assert (tmp_path / discovery.STACK_FILE).exists()
    discovery.forget(tmp_path, 12345)
    assert not (tmp_path / discovery.STACK_FILE).exists()


def test_the_token_command_names_the_data_dir_only_when_it_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PAYGATE_DATA_DIR", raising=False)
    default = Settings.from_env({})
    assert discovery.token_command(default, secret_kept=True).endswith("token --role ops:write")
    assert "PAYGATE_DATA_DIR" not in discovery.token_command(default, secret_kept=True)
    monkeypatch.setenv("PAYGATE_DATA_DIR", "elsewhere")
    given = Settings.from_env({"PAYGATE_DATA_DIR": "elsewhere"})
    assert discovery.token_command(given, secret_kept=True).startswith(
        "PAYGATE_DATA_DIR=elsewhere "
    )
    assert "same ADMIN_JWT_SECRET" in discovery.token_command(given, secret_kept=False)


async def test_no_stack_and_no_url_is_one_line_saying_what_to_do(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(Unreachable) as caught:
        await discovery.locate(settings_in(tmp_path, EMBEDDED_PG_PORT=str(port)), "DATABASE_URL")
    assert str(caught.value) == (
        f"DATABASE_URL is not set, and no `paygate dev` answers at 127.0.0.1:{port} "
        "(connection refused): start one (make run) or set DATABASE_URL"
    )


def test_token_without_a_secret_says_where_it_looked(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("ADMIN_JWT_SECRET",)}
    env["PAYGATE_DATA_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", "token", "--role", "ops:read"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "paygate: configuration error: ADMIN_JWT_SECRET is not set, and no `paygate dev` has "
        f"kept one in {tmp_path}/dev-admin-jwt-secret (start one with `make run`)"
    )
