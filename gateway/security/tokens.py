"""Ops tokens: what a token claims, how long it may live, and how one is revoked.

A token is an HS256 JWT signed with ADMIN_JWT_SECRET carrying `sub` (who, for the audit
log), `roles`, `iat`, `exp`, `jti` (its id, so it can be revoked), `iss` and `aud`.
Verification refuses anything else: another algorithm, another issuer or audience (a
token minted for another deployment that shares the secret), a lifetime longer than
OPS_TOKEN_MAX_TTL_SECONDS (a token "valid until 2999" is refused however it was signed),
an `iat` in the future, no `jti`.

Revocation is a list of token ids kept in Postgres (`payment_service.revoked_tokens`,
gateway.db.revocations), so every process sees a revocation at its next request. An id
stays listed until the token it names would have expired anyway; the lifetime bound is
what keeps the list short. The console's sessions are tokens of their own kind with ids
in the same list: signing out revokes the session's id.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeGuard

import jwt

from gateway.config import Settings
from gateway.errors import Unauthorized

READ = "ops:read"
WRITE = "ops:write"
ROLES = (READ, WRITE)
ALGORITHM = "HS256"
LEEWAY_SECONDS = 30
ISSUER = "paygate"
AUDIENCE = "paygate-ops"
MAX_TTL_SECONDS = 24 * 3600
TOKEN_ID_MAX = 128


def is_token_id(value: object) -> TypeGuard[str]:
    """A token id the revocation list can hold: 1 to TOKEN_ID_MAX printable characters
    (a NUL or another control character is no id, and Postgres text cannot store NUL)."""
    return isinstance(value, str) and 0 < len(value) <= TOKEN_ID_MAX and value.isprintable()


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str]

    def allows(self, role: str) -> bool:
        return role in self.roles or (role == READ and WRITE in self.roles)


@dataclass(frozen=True)
class TokenPolicy:
    """What a valid token must say (the settings OPS_TOKEN_ISSUER, OPS_TOKEN_AUDIENCE and
    OPS_TOKEN_MAX_TTL_SECONDS)."""

    issuer: str = ISSUER
    audience: str = AUDIENCE
    max_ttl: int = MAX_TTL_SECONDS


DEFAULT_POLICY = TokenPolicy()


def policy_of(settings: Settings) -> TokenPolicy:
    return TokenPolicy(
        settings.ops_token_issuer, settings.ops_token_audience, settings.ops_token_max_ttl_seconds
    )


@dataclass(frozen=True)
class Claims:
    """A verified token: who, its id and when it expires (epoch seconds)."""

    principal: Principal
    token_id: str
    expires: int


class TokenTooLong(ValueError):
    """A lifetime above the policy's maximum was asked for."""


class Revocations(Protocol):
    """The revocation list (gateway.db.revocations keeps it in Postgres)."""

    async def any_revoked(self, token_ids: Sequence[str]) -> bool: ...

    async def revoke(self, token_id: str, expires: int, *, actor: str, reason: str) -> None: ...


def new_token_id() -> str:
    return secrets.token_urlsafe(16)


def mint(
    secret: str,
    subject: str,
    roles: Iterable[str],
    *,
    ttl: int = 3600,
    policy: TokenPolicy = DEFAULT_POLICY,
    now: float | None = None,
) -> str:
    if not 1 <= ttl <= policy.max_ttl:
        raise TokenTooLong(f"a token lives between 1 and {policy.max_ttl} seconds")
    issued = int(time.time() if now is None else now)
    claims = {
        "sub": subject, "roles": sorted(set(roles)), "iat": issued, "exp": issued + ttl,
        "jti": new_token_id(), "iss": policy.issuer, "aud": policy.audience,
    }  # fmt: skip
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(
    token: str, secret: str, policy: TokenPolicy = DEFAULT_POLICY, *, now: float | None = None
) -> Claims:
    """The claims of a valid token; Unauthorized for anything else (no reason leaked: the
    caller learns only that this token does not work)."""
    refused = Unauthorized("invalid or expired token")
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], audience=policy.audience,
            issuer=policy.issuer, leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "sub", "jti", "iss", "aud"]},
        )  # fmt: skip
    except jwt.PyJWTError:
        raise refused from None
    sub, jti = claims.get("sub"), claims.get("jti")
    if not isinstance(sub, str) or not sub or len(sub) > 255 or not sub.isprintable():
        raise refused  # the audit log's actor: no control characters (NUL cannot be stored)
    if not is_token_id(jti):
        raise refused
    issued, expires = int(claims["iat"]), int(claims["exp"])
    if expires - issued > policy.max_ttl:
        raise refused  # minted for longer than this deployment allows
    return Claims(Principal(sub, frozenset(roles_of(claims))), jti, expires)


def roles_of(claims: dict[str, object]) -> list[str]:
    raw = claims.get("roles", claims.get("role"))
    if isinstance(raw, str):
        raw = raw.split()
    if not isinstance(raw, list):
        return []
    return [r for r in raw if isinstance(r, str) and r in ROLES]


async def check_not_revoked(revocations: Revocations, *token_ids: str) -> None:
    """Unauthorized when any of the ids (a session's and the token it came from) is listed."""
    if await revocations.any_revoked(token_ids):
        raise Unauthorized("invalid or expired token")
