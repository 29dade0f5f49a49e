"""Ops API authentication: HS256 bearer JWTs signed with ADMIN_JWT_SECRET.

Each ops route declares the role it needs (`gateway.security.access`: `ops:read` or
`ops:write`, which also grants read); the request context runs this gate for it, so
which path text reached the route does not matter. The token's `sub` becomes
`request[PRINCIPAL].subject` for the audit log.
Without ADMIN_JWT_SECRET the ops API answers 503 `ops_api_disabled`: it fails closed
rather than open. Only HS256 is accepted, so `alg: none` and key-confusion tokens fail.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import jwt
from aiohttp import web

from gateway.errors import Forbidden, ServiceUnavailable, Unauthorized

READ = "ops:read"
WRITE = "ops:write"
ROLES = (READ, WRITE)
ALGORITHM = "HS256"
LEEWAY_SECONDS = 30
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str]

    def allows(self, role: str) -> bool:
        return role in self.roles or (role == READ and WRITE in self.roles)


PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("ops_principal")


def mint_token(
    secret: str, subject: str, roles: Iterable[str], *, ttl: int = 3600, now: float | None = None
) -> str:
    issued = int(time.time() if now is None else now)
    claims = {"sub": subject, "roles": sorted(set(roles)), "iat": issued, "exp": issued + ttl}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def decode_token(token: str, secret: str) -> Principal:
    """The principal of a valid token; Unauthorized for anything else (no reason leaked)."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "iat", "sub"]},
            leeway=LEEWAY_SECONDS,
        )
    except jwt.PyJWTError:
        raise Unauthorized("invalid or expired token") from None
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 255:
        raise Unauthorized("invalid or expired token")
    return Principal(sub, frozenset(_roles(claims)))


def _roles(claims: dict[str, object]) -> list[str]:
    raw = claims.get("roles", claims.get("role"))
    if isinstance(raw, str):
        raw = raw.split()
    if not isinstance(raw, list):
        return []
    return [r for r in raw if isinstance(r, str) and r in ROLES]


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


def authenticate(request: web.Request, secret: str, role: str) -> Principal:
    if not secret:
        raise ServiceUnavailable(
            "the ops API is disabled: ADMIN_JWT_SECRET is not set", code="ops_api_disabled"
        )
    token = bearer_token(request.headers.get("Authorization", ""))
    if token is None:
        raise _Unauthorized("a bearer token is required")
    try:
        principal = decode_token(token, secret)
    except Unauthorized as exc:
        raise _Unauthorized(exc.detail) from None
    if not principal.allows(role):
        raise Forbidden(f"this action needs the {role} role", code="forbidden")
    return principal


def ops_gate(secret: str, role: str) -> Callable[[web.Request], None]:
    """The gate (appkeys.ACCESS_GATES) of the ops routes that declare `role`."""

    def require_ops_token(request: web.Request) -> None:
        request[PRINCIPAL] = authenticate(request, secret, role)

    return require_ops_token
