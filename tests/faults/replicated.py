"""A primary and a streaming standby made from the session's PostgreSQL binaries, for the
failover scenario: the primary is `initdb`'s, the standby a `pg_basebackup -R` copy of
it, and `synchronous_standby_names`, set on the primary once the standby streams
(ALTER SYSTEM after the copy: the promoted standby must not inherit it and wait for a
standby it does not have), decides whether COMMIT waits for the standby.

Killing the primary kills its whole process group, the postmaster and every backend at
once, as a host dying would: no backend gets to answer a COMMIT after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from pathlib import Path

import asyncpg
import psutil

from gateway.db.migrations import migrate
from workers.cli.devstack import EmbeddedPostgres, _open_path_for, free_port

STANDBY_NAME = "standby1"


class _Node(EmbeddedPostgres):
    """One server of the pair: the usual embedded settings plus replication's own."""

    def __init__(self, data_dir: Path, bin_dir: Path, extra: dict[str, str]) -> None:
        super().__init__(data_dir, bin_dir=bin_dir)
        self.extra = extra

    def command(self) -> list[str]:
        cmd = super().command()
        for name, value in self.extra.items():
            cmd += ["-c", f"{name}={value}"]
        return cmd

    async def _ensure_database(self) -> None:
        if self.extra.get("cluster_name") == STANDBY_NAME:
            return  # a hot standby is read-only; the database came with the copy
        await super()._ensure_database()

    def kill_host(self) -> None:
        """SIGKILL to the postmaster and every backend at once, as when the host dies.
        Backends each start a session of their own, so killing the postmaster's group
        alone leaves them to notice its death: a stalled (stopped) WAL sender never would,
        and would outlive the test."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            backends = psutil.Process(proc.pid).children()
            os.killpg(proc.pid, signal.SIGKILL)
            for backend in backends:
                with contextlib.suppress(psutil.NoSuchProcess):
                    backend.kill()
            proc.wait()


class ReplicatedPair:
    def __init__(self, root: Path, bin_dir: Path, *, synchronous: bool) -> None:
        self.synchronous = synchronous
        common = {"wal_level": "replica", "max_wal_senders": "5", "hot_standby": "on"}
        self.primary = _Node(root / "primary", bin_dir, common)
        self.standby = _Node(root / "standby", bin_dir, {**common, "cluster_name": STANDBY_NAME})

    @property
    def url(self) -> str:
        """The failover-ready DATABASE_URL: both hosts, only a writable one accepted."""
        p, s = self.primary.port, self.standby.port
        return (
            f"postgresql://postgres@127.0.0.1:{p},127.0.0.1:{s}/{self.primary.database}"
            "?target_session_attrs=read-write"
        )

    async def start(self) -> None:
        await self.primary.start()
        await migrate(self.primary.url)
        await asyncio.to_thread(self._base_backup)
        # A port picked at construction may have been taken since (seconds of base backup,
        # other processes' ephemeral ports): pick the standby's when it starts.
        self.standby.port = free_port()
        await self.standby.start()
        if self.synchronous:
            conn = await asyncpg.connect(self.primary.url)
            try:
                await conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'")
                await conn.execute("SELECT pg_reload_conf()")
            finally:
                await conn.close()
        await self.wait_streaming()

    def _base_backup(self) -> None:
        self.standby.data_dir.mkdir(parents=True, exist_ok=True)
        user = self.standby._user
        if user is not None:
            _open_path_for(self.standby.data_dir, user)
        subprocess.run(
            [str(self.standby.bin / "pg_basebackup"), "-h", "127.0.0.1",
             "-p", str(self.primary.port), "-U", "postgres", "-D", str(self.standby.pgdata),
             "-R", "-X", "stream", "--checkpoint=fast", "--no-sync"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            **self.standby.popen_kwargs(),  # type: ignore[call-overload]
        )  # fmt: skip

    async def wait_streaming(self, timeout: float = 30.0) -> None:
        """Until the primary sees the standby streaming (and, when synchronous, as its
        synchronous standby): before that a synchronous commit would wait."""
        want = "sync" if self.synchronous else "async"
        conn = await asyncpg.connect(self.primary.url)
        try:
            deadline = asyncio.get_running_loop().time() + timeout
            while True:
                state = await conn.fetchval(
                    "SELECT sync_state FROM pg_stat_replication"
                    " WHERE application_name = $1 AND state = 'streaming'",
                    STANDBY_NAME,
                )
                if state == want:
                    return
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(f"standby not streaming as {want} (state {state!r})")
                await asyncio.sleep(0.05)
        finally:
            await conn.close()

    async def stall_wal_sender(self) -> None:
        """Stop the primary's WAL sender (SIGSTOP): from now on the standby falls behind,
        as it does over a slow link or when it is busy. Killing the host later kills
        the stopped sender too, with the WAL it never sent."""
        conn = await asyncpg.connect(self.primary.url)
        try:
            pid = await conn.fetchval(
                "SELECT pid FROM pg_stat_replication WHERE application_name = $1", STANDBY_NAME
            )
        finally:
            await conn.close()
        assert pid, "no WAL sender to stall"
        os.kill(pid, signal.SIGSTOP)

    async def promote(self, attempts: int = 5) -> int:
        """What a failover tool does once the primary is gone: the standby takes writes.
        Retried, as such a tool would, when the connection to the standby breaks; returns
        the attempts it took (the standby's log tail is in the error if none worked)."""
        for attempt in range(1, attempts + 1):
            try:
                conn = await asyncpg.connect(self.standby.url, timeout=10)
                try:
                    if not await conn.fetchval("SELECT pg_is_in_recovery()"):
                        return attempt  # an earlier attempt's promotion went through
                    if await conn.fetchval("SELECT pg_promote(wait => true, wait_seconds => 30)"):
                        return attempt
                finally:
                    await conn.close()
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError):
                await asyncio.sleep(0.2)
        log = (self.standby.data_dir / "postgres.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the standby was not promoted in {attempts} attempts:\n{log}")

    async def stop(self) -> None:
        await asyncio.gather(self.primary.stop(), self.standby.stop(), return_exceptions=True)
