"""Does anything answer at the address a URL names? Asked once before a command starts,
so a URL pointing at nothing is one line naming the variable and the host:port, not a
traceback from deep inside a client library.

Only the addresses are read from a URL: user names and passwords never reach a message.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

if TYPE_CHECKING:
    from gateway.config import Settings

CONNECT_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Address:
    """A TCP host and port, or a Unix socket path (port 0)."""

    host: str
    port: int = 0

    @property
    def is_unix(self) -> bool:
        return self.host.startswith("/")

    def __str__(self) -> str:
        if self.is_unix:
            return self.host
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class Unreachable(Exception):
    """Nothing answered at any address of one or more variables; the message is one line."""


def _host_port(item: str, default_port: int) -> Address:
    item = item.strip()
    if item.startswith("["):  # [ipv6]:port
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = item.rpartition(":") if item.count(":") == 1 else (item, "", "")
    return Address(unquote(host), int(port) if port.isdigit() else default_port)


def database_addresses(url: str) -> list[Address]:
    """Every host of a libpq-style URL (asyncpg accepts `host1:5432,host2:5433` and the
    `host`/`port` query parameters, a directory there meaning a Unix socket). Empty when
    the URL leaves the host to the client's defaults."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    netloc = parts.netloc.rpartition("@")[2]
    hosts = [h for h in netloc.split(",") if h]
    if "host" in query:
        ports = query.get("port", ["5432"])[0].split(",")
        found = []
        for n, host in enumerate(query["host"][0].split(",")):
            port = int(ports[min(n, len(ports) - 1)] or 5432)
            if host.startswith("/"):
                found.append(Address(f"{host.rstrip('/')}/.s.PGSQL.{port}"))
            else:
                found.append(Address(host, port))
        return found
    return [_host_port(h, 5432) for h in hosts]


def redis_addresses(url: str) -> list[Address]:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return [Address(parts.path)] if parts.path else []
    if not parts.hostname:
        return []
    return [Address(parts.hostname, parts.port or 6379)]


def kafka_addresses(servers: str) -> list[Address]:
    """KAFKA_BOOTSTRAP_SERVERS: `host:port` entries, comma separated (a `scheme://` prefix
    on an entry is tolerated)."""
    return [
        _host_port(item.strip().rpartition("://")[2], 9092)
        for item in servers.split(",")
        if item.strip()
    ]


ADDRESSES = {
    "DATABASE_URL": database_addresses,
    "REDIS_URL": redis_addresses,
    "KAFKA_BOOTSTRAP_SERVERS": kafka_addresses,
}


async def _answers(address: Address, timeout: float) -> str | None:
    """None when a connection opens, else why not, in a few words."""
    try:
        if address.is_unix:
            opening = asyncio.open_unix_connection(address.host)
        else:
            opening = asyncio.open_connection(address.host, address.port)
        _, writer = await asyncio.wait_for(opening, timeout)
    except TimeoutError:
        return f"no answer in {timeout:g} s"
    except socket.gaierror:
        return "name does not resolve"
    except ConnectionRefusedError:
        return "connection refused"
    except FileNotFoundError:
        return "no such socket"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return None


async def unreachable(variable: str, value: str, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """None when at least one address of `variable` answers (or none can be told from its
    value), else a phrase naming every address tried and why it failed."""
    addresses = ADDRESSES[variable](value)
    if not addresses:
        return None
    reasons = await asyncio.gather(*(_answers(a, timeout) for a in addresses))
    if any(r is None for r in reasons):
        return None
    tried = ", ".join(f"{a} ({r})" for a, r in zip(addresses, reasons, strict=True))
    return f"{variable} at {tried}"


async def require_reachable(
    values: Iterable[tuple[str, str]], timeout: float = CONNECT_TIMEOUT_S
) -> None:
    """Check every (variable, value) given with a value at once; raise Unreachable naming
    each that nothing answered."""
    given = [(name, value) for name, value in values if value]
    failures = await asyncio.gather(*(unreachable(n, v, timeout) for n, v in given))
    failed = [f for f in failures if f]
    if failed:
        raise Unreachable("cannot reach " + "; ".join(failed))


async def require_urls(settings: Settings) -> None:
    """Before `paygate run`, `serve` or `dev` start anything: every server URL given must
    answer. A running gateway rides out a Redis or broker outage; at start-up an address
    where nothing answers is far more often a mistake, and found at once this way."""
    await require_reachable(
        [
            ("DATABASE_URL", settings.database_url),
            ("REDIS_URL", settings.redis_url),
            ("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers),
        ]
    )
