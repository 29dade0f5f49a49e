"""The production-shaped servers the estate tests connect to, started on free loopback
ports from the binaries installed here (tools/install-system-packages.sh):

- `TlsKafka`: Tansu (plaintext only) behind Debian's stunnel4, which terminates TLS and
  requires a client certificate; Tansu advertises the stunnel port.
- `AuthKafka`: Tansu with `--authentication` (SASL SCRAM required).
- `TlsRedis`: Debian's redis-server 7 on a TLS port only, with an ACL user.
- `SentinelRedis`: a master, a replica and three redis-sentinel processes.
- `ClusterRedis`: three `--cluster-enabled` nodes sharing the 16384 slots.
- `TlsPostgres`: PostgreSQL 15 with `ssl=on` and the test CA.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import redis.asyncio as aioredis

from tests.estate.certs import Certificates
from workers.cli.devstack import (
    DEBIAN_POSTGRES_15,
    DEBIAN_REDIS,
    EmbeddedKafka,
    EmbeddedPostgres,
    EmbeddedServer,
    free_port,
)

STUNNEL = Path("/usr/bin/stunnel4")
REDIS_SENTINEL = Path("/usr/bin/redis-sentinel")
REQUIRED = (STUNNEL, REDIS_SENTINEL, DEBIAN_REDIS, DEBIAN_POSTGRES_15 / "postgres")


def missing_binaries() -> list[str]:
    return [str(p) for p in REQUIRED if not p.exists()]


class AdvertisedKafka(EmbeddedKafka):
    """Tansu telling clients to come back through another port (stunnel's)."""

    def __init__(self, data_dir: Path, advertised_port: int, *, authentication: bool = False):
        super().__init__(data_dir)
        self.advertised_port = advertised_port
        self.authentication = authentication

    def command(self) -> list[str]:
        command = super().command()
        at = command.index("--advertised-listener-url") + 1
        command[at] = f"tcp://127.0.0.1:{self.advertised_port}"
        return command + (["--authentication"] if self.authentication else [])


class Stunnel(EmbeddedServer):
    """TLS on `port` to plaintext `target`: the server certificate of the test CA, and
    (verifyChain) only clients whose certificate the test CA signed."""

    name = "stunnel"

    def __init__(self, data_dir: Path, target: int, certs: Certificates) -> None:
        super().__init__(data_dir)
        self.target = target
        self.certs = certs

    def command(self) -> list[str]:
        conf = self.data_dir / "stunnel.conf"
        conf.write_text(
            "foreground = yes\npid =\ndebug = 4\n"
            "[kafka]\n"
            f"accept = 127.0.0.1:{self.port}\nconnect = 127.0.0.1:{self.target}\n"
            f"cert = {self.certs.server_cert}\nkey = {self.certs.server_key}\n"
            f"CAfile = {self.certs.ca}\nverifyChain = yes\n"
        )
        return [str(STUNNEL), str(conf)]


class TlsKafka:
    def __init__(self, root: Path, certs: Certificates) -> None:
        tls_port = free_port()
        self.broker = AdvertisedKafka(root / "tansu", tls_port)
        self.stunnel = Stunnel(root / "stunnel", self.broker.port, certs)
        self.stunnel.port = tls_port

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.stunnel.port}"

    async def start(self) -> None:
        await self.broker.start()
        await self.stunnel.start()

    async def stop(self) -> None:
        await self.stunnel.stop()
        await self.broker.stop()


class RedisServer(EmbeddedServer):
    """Debian's redis-server with extra arguments (`--port 0` and a TLS port, a cluster
    node, a replica...)."""

    name = "redis"

    def __init__(self, data_dir: Path, *extra: str, port: int = 0) -> None:
        super().__init__(data_dir, port)
        self.extra = list(extra)

    def base(self) -> list[str]:
        return [str(DEBIAN_REDIS), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.data_dir), "--loglevel", "warning"]  # fmt: skip

    def command(self) -> list[str]:
        return [*self.base(), "--port", str(self.port), *self.extra]


class TlsRedis(RedisServer):
    """TLS only (no plaintext port), client certificates optional, the default user off and
    an ACL user `paygate` allowed the `paygate:*` keys."""

    PASSWORD = "acl-user-password"

    def __init__(self, data_dir: Path, certs: Certificates, *, client_certs: str = "optional"):
        super().__init__(data_dir)
        self.certs = certs
        self.client_certs = client_certs

    def command(self) -> list[str]:
        return [*self.base(), "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(self.certs.server_cert),
                "--tls-key-file", str(self.certs.server_key),
                "--tls-ca-cert-file", str(self.certs.ca),
                "--tls-auth-clients", self.client_certs,
                "--user", "default", "off",
                "--user", "paygate", "on", f">{self.PASSWORD}", "~paygate:*", "+@all"]  # fmt: skip

    def url(self, host: str = "127.0.0.1", password: str = PASSWORD) -> str:
        return f"rediss://paygate:{password}@{host}:{self.port}/0"


class Sentinel(EmbeddedServer):
    name = "sentinel"

    def __init__(self, data_dir: Path, master_port: int, password: str) -> None:
        super().__init__(data_dir)
        self.master_port = master_port
        self.password = password

    def command(self) -> list[str]:
        conf = self.data_dir / "sentinel.conf"
        if not conf.exists():  # sentinels rewrite their file: keep it across restarts
            conf.write_text(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.data_dir}\n"
                f"requirepass {self.password}\n"
                f"sentinel monitor paygate 127.0.0.1 {self.master_port} 2\n"
                "sentinel down-after-milliseconds paygate 1000\n"
                "sentinel failover-timeout paygate 5000\n"
                "sentinel parallel-syncs paygate 1\n"
            )
        return [str(REDIS_SENTINEL), str(conf), "--loglevel", "warning"]


class SentinelRedis:
    """One master, one replica, three sentinels (quorum 2) watching them as `paygate`."""

    MASTER = "paygate"
    PASSWORD = "sentinel-password"

    def __init__(self, root: Path) -> None:
        self.master = RedisServer(root / "master")
        self.replica = RedisServer(root / "replica")
        self.replica.extra = ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.sentinels = [
            Sentinel(root / f"sentinel-{i}", self.master.port, self.PASSWORD) for i in range(3)
        ]

    @property
    def addresses(self) -> str:
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    async def start(self) -> None:
        await self.master.start()
        await self.replica.start()
        await wait_until(self._replica_in_sync, 20, "the replica to sync")
        await asyncio.gather(*(s.start() for s in self.sentinels))
        await wait_until(self._sentinels_agree, 20, "the sentinels to see each other")

    async def _replica_in_sync(self) -> bool:
        info = await _info(self.replica.port, "replication")
        return info.get("master_link_status") == "up"

    async def _sentinels_agree(self) -> bool:
        for s in self.sentinels:
            client = aioredis.Redis(port=s.port, password=self.PASSWORD, decode_responses=True)
            try:
                state = await client.sentinel_master(self.MASTER)
            finally:
                await client.aclose()
            if int(state.get("num-other-sentinels", 0)) < 2 or int(state["num-slaves"]) < 1:
                return False
        return True

    async def master_port(self) -> int:
        client = aioredis.Redis(
            port=self.sentinels[0].port, password=self.PASSWORD, decode_responses=True
        )
        try:
            _, port = await client.sentinel_get_master_addr_by_name(self.MASTER)
        finally:
            await client.aclose()
        return int(port)

    async def stop(self) -> None:
        servers = [*self.sentinels, self.replica, self.master]
        await asyncio.gather(*(s.stop() for s in servers), return_exceptions=True)


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 >= 65536:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


class ClusterRedis:
    """Three masters, no replicas: each owns a third of the slots."""

    def __init__(self, root: Path) -> None:
        self.nodes = [
            RedisServer(root / f"node-{i}", "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
                        port=cluster_port())
            for i in range(3)
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    async def start(self) -> None:
        await asyncio.gather(*(n.start() for n in self.nodes))
        bounds = [0, 5461, 10923, 16384]
        for i, node in enumerate(self.nodes):
            client = aioredis.Redis(port=node.port)
            try:
                await client.execute_command(
                    "CLUSTER", "ADDSLOTSRANGE", bounds[i], bounds[i + 1] - 1
                )
                for other in self.nodes:
                    if other is not node:
                        await client.execute_command("CLUSTER", "MEET", "127.0.0.1", other.port)
            finally:
                await client.aclose()
        await wait_until(self._ok, 30, "the cluster to settle")

    async def _ok(self) -> bool:
        for node in self.nodes:
            client = aioredis.Redis(port=node.port, decode_responses=True)
            try:
                info = await client.execute_command("CLUSTER", "INFO")
            finally:
                await client.aclose()
            text = info if isinstance(info, str) else str(info)
            if "cluster_state:ok" not in text or "cluster_known_nodes:3" not in text:
                return False
        return True

    async def stop(self) -> None:
        await asyncio.gather(*(n.stop() for n in self.nodes), return_exceptions=True)


class TlsPostgres(EmbeddedPostgres):
    """PostgreSQL 15 requiring TLS from every client; the user `paygate` must also present
    a client certificate the test CA signed, issued to its name."""

    def __init__(self, data_dir: Path, certs: Certificates) -> None:
        super().__init__(data_dir, bin_dir=DEBIAN_POSTGRES_15)
        self.certs = certs

    def command(self) -> list[str]:
        return [*super().command(), "-c", "ssl=on",
                "-c", f"ssl_cert_file={self.certs.server_cert}",
                "-c", f"ssl_key_file={self.certs.server_key}",
                "-c", f"ssl_ca_file={self.certs.ca}",
                "-c", f"hba_file={self.data_dir / 'pg_hba.conf'}"]  # fmt: skip

    async def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "pg_hba.conf").write_text(
            "hostssl all paygate 127.0.0.1/32 trust clientcert=verify-full\n"
            "hostssl all all 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 reject\n"
        )
        if self._user is not None:
            self.certs.own(self._user.pw_uid, self._user.pw_gid)
        await super().start(timeout)
        import asyncpg

        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres")
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = 'paygate'"):
                await conn.execute("CREATE ROLE paygate LOGIN SUPERUSER")
        finally:
            await conn.close()

    def dsn(self, host: str = "127.0.0.1", user: str = "postgres", **params: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://{user}@{host}:{self.port}/{self.database}?{query}"


async def _info(port: int, section: str) -> dict[str, str]:
    client = aioredis.Redis(port=port, decode_responses=True)
    try:
        return {k: str(v) for k, v in (await client.info(section)).items()}
    except OSError:
        return {}
    finally:
        await client.aclose()


async def wait_until(condition: object, timeout: float, what: str) -> None:
    """Poll an async condition (exceptions count as "not yet") until a deadline."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if await condition():  # type: ignore[operator]
                return
        except Exception as exc:
            last = exc
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")
