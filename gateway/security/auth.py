"""Ops API authentication: HS256 bearer JWTs signed with ADMIN_JWT_SECRET.

Each ops route declares the role it needs (`gateway.security.access`: `ops:read` or
`ops:write`, which also grants read); the request context runs this gate for it, so
which path text reached the route does not matter. The token's `sub` becomes
`request[PRINCIPAL].subject` for the audit log.
Without ADMIN_JWT_SECRET the ops API answers 503 `ops_api_disabled`: it fails closed
rather than open. What a token must claim, how long it may live and its revocation are
gateway.security.tokens.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable

from aiohttp import web

from gateway.errors import Forbidden, ServiceUnavailable, Unauthorized
from gateway.security import tokens
from gateway.security.access import Gate
from gateway.security.tokens import (
    READ,
    ROLES,
    WRITE,
    Claims,
    Principal,
    Revocations,
    TokenPolicy,
)

__all__ = ["READ", "ROLES", "WRITE", "Principal"]

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("ops_principal")
TOKEN: web.RequestKey[Claims] = web.RequestKey("ops_token")


def mint_token(
    secret: str, subject: str, roles: Iterable[str], *, ttl: int = 3600, now: float | None = None
) -> str:
    """A token under the default policy (tests, the bench)."""
    return tokens.mint(secret, subject, roles, ttl=ttl, now=now)


def decode_token(token: str, secret: str, policy: TokenPolicy = tokens.DEFAULT_POLICY) -> Principal:
    """The principal of a valid token; Unauthorized for anything else (no reason leaked)."""
    return tokens.verify(token, secret, policy).principal


def required_role(method: str) -> str:
    return READ if method.upper() in _READ_METHODS else WRITE


def bearer_token(header: str) -> str | None:
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class _Unauthorized(Unauthorized):
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="paygate-ops"'}


def authenticate(
    request: web.Request, secret: str, role: str, policy: TokenPolicy = tokens.DEFAULT_POLICY
) -> Claims:
    if not secret:
        raise ServiceUnavailable(
            "the ops API is disabled: ADMIN_JWT_SECRET is not set", code="ops_api_disabled"
        )
    token = bearer_token(request.headers.get("Authorization", ""))
    if token is None:
        raise _Unauthorized("a bearer token is required")
    try:
        claims = tokens.verify(token, secret, policy)
    except Unauthorized as exc:
        raise _Unauthorized(exc.detail) from None
    if not claims.principal.allows(role):
        raise Forbidden(f"this action needs the {role} role", code="forbidden")
    return claims


def ops_gate(
    secret: str,
    role: str,
    policy: TokenPolicy = tokens.DEFAULT_POLICY,
    revocations: Revocations | None = None,
) -> Gate:
    """The gate (appkeys.ACCESS_GATES) of the ops routes that declare `role`: the token is
    checked here, its id against the revocation list in the awaitable it returns."""

    def require_ops_token(request: web.Request) -> Awaitable[None] | None:
        claims = authenticate(request, secret, role, policy)
        request[PRINCIPAL] = claims.principal
        request[TOKEN] = claims
        return None if revocations is None else _not_revoked(revocations, claims)

    return require_ops_token


async def _not_revoked(revocations: Revocations, claims: Claims) -> None:
    try:
        await tokens.check_not_revoked(revocations, claims.token_id)
    except Unauthorized as exc:
        raise _Unauthorized(exc.detail) from None
