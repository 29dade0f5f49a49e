"""The revocation list of ops tokens and console sessions (sql/150), as
gateway.security.tokens.Revocations: one primary-key lookup per authenticated request."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import asyncpg

from gateway.errors import ServiceUnavailable

# Kept a little past expiry: verification allows LEEWAY_SECONDS of clock skew.
_KEEP_PAST_EXPIRY = "2 minutes"

_REVOKE = f"""
WITH pruned AS (
    DELETE FROM payment_service.revoked_tokens
    WHERE expires_at < now() - interval '{_KEEP_PAST_EXPIRY}'
)
INSERT INTO payment_service.revoked_tokens (token_id, expires_at, revoked_by, reason)
VALUES ($1, $2, $3, $4)
ON CONFLICT (token_id) DO NOTHING
"""

_ANY_REVOKED = """
SELECT EXISTS (SELECT 1 FROM payment_service.revoked_tokens WHERE token_id = ANY($1::text[]))
"""

LOOKUP_TIMEOUT = 2.0


class PostgresRevocations:
    """The list in Postgres, read through the app's pool (given as a getter: the pool
    exists only once the app has started)."""

    def __init__(self, pool: Callable[[], asyncpg.Pool]) -> None:
        self._pool = pool

    async def any_revoked(self, token_ids: Sequence[str]) -> bool:
        ids = [t for t in token_ids if t]
        if not ids:
            return False
        try:
            found = await self._pool().fetchval(_ANY_REVOKED, ids, timeout=LOOKUP_TIMEOUT)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            # Fails closed: a token is not taken as valid while the list cannot be read.
            raise ServiceUnavailable(
                "the token revocation list is unavailable", code="database_unavailable"
            ) from None
        return bool(found)

    async def revoke(self, token_id: str, expires: int, *, actor: str, reason: str) -> None:
        await self._pool().execute(
            _REVOKE, token_id, datetime.fromtimestamp(expires, UTC), actor[:255], reason[:64],
            timeout=LOOKUP_TIMEOUT,
        )  # fmt: skip
