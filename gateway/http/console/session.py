"""Console sessions: an ops token exchanged for a cookie, and CSRF protection.

Signing in checks the ops token exactly as the API does (gateway.security.auth) and sets
`paygate_session`: a short JWT signed with a key derived from ADMIN_JWT_SECRET (so a
session cookie is not an API token), HttpOnly (no script reads it), SameSite=Strict (no
other site's page sends it), Secure under TLS, and never longer-lived than the token.

Every state-changing request needs two things besides the cookie: an Origin header, when
the browser sends one, naming this host, and a CSRF token (a form field or the
X-CSRF-Token header) that is an HMAC of the session's random id, so a page that cannot
read ours cannot know it. The sign-in form itself carries a double-submit token, so no
other site can sign a browser in as someone else.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import jwt
from aiohttp import web

from gateway.errors import Forbidden, Unauthorized
from gateway.security.access import Access, Gate
from gateway.security.auth import ALGORITHM, READ, ROLES, WRITE, Principal, decode_token

PREFIX = "/console"
COOKIE = "paygate_session"
LOGIN_COOKIE = "paygate_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_SECONDS = 8 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    sid: str
    expires: int


SESSION: web.RequestKey[Session] = web.RequestKey("console_session")


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"paygate-console-session-v1", hashlib.sha256).digest()


def csrf_token(secret: str, sid: str) -> str:
    return hmac.new(_key(secret), b"csrf:" + sid.encode(), hashlib.sha256).hexdigest()


def new_session(secret: str, ops_token: str, *, now: float | None = None) -> tuple[str, Session]:
    """The cookie value and session for a valid ops token; Unauthorized/Forbidden otherwise."""
    principal = decode_token(ops_token, secret)
    if not principal.allows(READ):
        raise Forbidden("this token carries no ops role (ops:read or ops:write)")
    claims = jwt.decode(ops_token, options={"verify_signature": False})
    issued = int(time.time() if now is None else now)
    expires = min(int(claims["exp"]), issued + SESSION_SECONDS)
    sid = secrets.token_urlsafe(18)
    cookie = jwt.encode(
        {"sub": principal.subject, "roles": sorted(principal.roles), "iat": issued,
         "exp": expires, "sid": sid, "typ": "console"},
        _key(secret).hex(), algorithm=ALGORITHM,
    )  # fmt: skip
    return cookie, Session(principal, sid, expires)


def read_session(secret: str, cookie: str | None) -> Session | None:
    if not cookie or not secret:
        return None
    try:
        claims = jwt.decode(
            cookie, _key(secret).hex(), algorithms=[ALGORITHM],
            options={"require": ["exp", "iat", "sub", "sid"]},
        )  # fmt: skip
    except jwt.PyJWTError:
        return None
    if claims.get("typ") != "console" or not isinstance(claims.get("sid"), str):
        return None
    roles = frozenset(r for r in claims.get("roles", []) if r in ROLES)
    return Session(Principal(str(claims["sub"]), roles), claims["sid"], int(claims["exp"]))


def set_cookie(response: web.StreamResponse, request: web.Request, name: str, value: str,
               max_age: int) -> None:  # fmt: skip
    response.set_cookie(
        name, value, max_age=max(0, max_age), path=PREFIX, httponly=True, samesite="Strict",
        secure=request.secure,
    )  # fmt: skip


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not sent (older browsers, same-origin GET): the token still decides
    parts = urlsplit(origin)
    return parts.netloc == request.host and parts.scheme == request.scheme


def console_gates(secret: str) -> dict[Access, Gate]:
    """The gates of the console's routes, by the access each declares: a session (and
    its role) for the pages and actions, a same-origin check on every action."""

    def sign_in(request: web.Request) -> None:
        if request.method not in SAFE_METHODS:
            _check_origin(request)

    def session_with(role: str | None) -> Gate:
        def require_console_session(request: web.Request) -> None:
            session = read_session(secret, request.cookies.get(COOKIE))
            if session is None:
                if request.method in SAFE_METHODS:
                    raise web.HTTPSeeOther(f"{PREFIX}/login")
                raise Unauthorized("sign in first", code="unauthorized")
            if role is not None and not session.principal.allows(role):
                raise Forbidden(f"this action needs the {role} role", code="forbidden")
            if request.method not in SAFE_METHODS:
                _check_origin(request)
            request[SESSION] = session

        return require_console_session

    return {
        Access.CONSOLE_SIGN_IN: sign_in,
        Access.CONSOLE_SESSION: session_with(None),
        Access.CONSOLE_READ: session_with(READ),
        Access.CONSOLE_WRITE: session_with(WRITE),
    }


def _check_origin(request: web.Request) -> None:
    if not _same_origin(request):
        raise Forbidden("cross-origin request refused", code="csrf_failed")


def check_csrf(request: web.Request, secret: str, submitted: str | None) -> None:
    """Refuse an action whose CSRF token is missing or wrong (403 csrf_failed)."""
    session = request.get(SESSION)
    token = submitted or request.headers.get(CSRF_HEADER, "")
    if session is None or not token:
        raise Forbidden("missing CSRF token", code="csrf_failed")
    if not hmac.compare_digest(token.encode(), csrf_token(secret, session.sid).encode()):
        raise Forbidden("wrong CSRF token", code="csrf_failed")


def check_login_csrf(request: web.Request, submitted: str | None) -> None:
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    if not cookie or not submitted or not hmac.compare_digest(cookie.encode(), submitted.encode()):
        raise Forbidden("the sign-in form expired: load it again", code="csrf_failed")
