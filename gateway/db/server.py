"""Which PostgreSQL paygate is talking to: refused below the supported minimum, and the
version-dependent SQL chosen once from its version.

PostgreSQL 15 is the oldest supported server (Debian 12's, supported upstream until
November 2027). Newer servers have better functions for two things paygate does:
`uuidv7()` (18) for time-ordered payment ids in the staging batch, and
`pg_input_is_valid()` (16) to test text for JSON without an exception block. On older
servers the portable variant is used: a v7 id assembled from the clock and
`gen_random_uuid()`'s random bits, and `payment_service.is_valid_jsonb()` (sql/050),
correct and only slower.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import asyncpg

from gateway.errors import ConfigError


@contextmanager
def certificate_check() -> Iterator[None]:
    """A server certificate refused under `sslmode=verify-ca|verify-full` is a configuration
    error, said as such (which check failed, and what to change) instead of a traceback.
    asyncpg raises it only once every host of DATABASE_URL refused."""
    try:
        yield
    except ssl.SSLCertVerificationError as exc:
        raise ConfigError(
            "DATABASE_URL: the server's TLS certificate was refused "
            f"({exc.verify_message or exc.reason}); with sslmode=verify-full the host in the "
            "URL must be a name the certificate was issued for, and sslrootcert the CA "
            "that signed it"
        ) from None


MINIMUM_SERVER_VERSION = 150000  # server_version_num of PostgreSQL 15.0

# A UUID v7 before 18: the Unix time in milliseconds (48 bits), the version nibble, then
# gen_random_uuid()'s hex from its 14th digit on (random bits, its RFC 4122 variant kept).
PORTABLE_UUIDV7 = (
    "(lpad(to_hex(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')"
    " || '7' || substr(replace(gen_random_uuid()::text, '-', ''), 14))::uuid"
)


class UnsupportedServer(ConfigError):
    """The server is older than paygate supports; the message names both versions."""


def version_name(version_num: int) -> str:
    """`150012` -> `15.12`."""
    return f"{version_num // 10000}.{version_num % 10000}"


def check_supported(version_num: int, minimum: int | None = None) -> None:
    """Raise UnsupportedServer below `minimum` (default MINIMUM_SERVER_VERSION, read at
    call time)."""
    minimum = MINIMUM_SERVER_VERSION if minimum is None else minimum
    if version_num < minimum:
        raise UnsupportedServer(
            f"PostgreSQL {version_name(version_num)} found; paygate needs PostgreSQL "
            f"{minimum // 10000} or newer"
        )


async def server_version(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SHOW server_version_num"))


@dataclass(frozen=True)
class ServerFunctions:
    """The SQL that differs by server version, decided once per process."""

    version_num: int

    @property
    def new_uuid(self) -> str:
        """An expression for a fresh time-ordered (v7) payment id."""
        return "uuidv7()" if self.version_num >= 180000 else PORTABLE_UUIDV7

    def is_valid_jsonb(self, text: str) -> str:
        """An expression: is the SQL text expression `text` valid JSON (NULL for NULL)?"""
        if self.version_num >= 160000:
            return f"pg_input_is_valid({text}, 'jsonb')"
        return f"payment_service.is_valid_jsonb({text})"


# What the pure SQL builders default to when no server was asked (the newest behaviour).
NEWEST = ServerFunctions(180000)
