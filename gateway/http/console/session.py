"""Console sessions: an ops token exchanged for a cookie, and CSRF protection.

Signing in checks the ops token exactly as the API does (gateway.security.tokens) and sets
`paygate_session`: a short JWT signed with a key derived from ADMIN_JWT_SECRET (so a
session cookie is not an API token), HttpOnly (no script reads it), SameSite=Strict (no
other site's page sends it), Secure when the browser reached us over https (behind a
trusted proxy too: gateway.security.scheme), and never longer-lived than the token.

A session has an id (`sid`) and remembers the id of the token it came from (`tid`); every
request checks both against the revocation list, so signing out (which revokes the
session's id) ends the session everywhere at once, and revoking the token ends every
session made from it. The cookie alone is never enough.

Each console route declares who may call it (`CONSOLE_ROUTES`): nobody in particular
(sign-in, static files), any signed-in session (signing out), or a role. Every
state-changing request needs two things besides the cookie: an Origin header, when the
browser sends one, naming this host and scheme, and a CSRF token (a form field or the
X-CSRF-Token header) that is an HMAC of the session's id, so a page that cannot read ours
cannot know it. The sign-in form itself carries a double-submit token, so no other site
can sign a browser in as someone else.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from urllib.parse import urlsplit

import jwt
from aiohttp import web

from gateway.config import Settings
from gateway.errors import Forbidden, Unauthorized
from gateway.security import tokens
from gateway.security.access import Access, Gate
from gateway.security.scheme import external_scheme
from gateway.security.tokens import (
    ALGORITHM,
    READ,
    ROLES,
    WRITE,
    Principal,
    Revocations,
    TokenPolicy,
)

PREFIX = "/console"
COOKIE = "paygate_session"
LOGIN_COOKIE = "paygate_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_SECONDS = 8 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HSTS = "max-age=31536000"


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    sid: str
    expires: int
    tid: str = ""  # the id of the ops token it was made from


SESSION: web.RequestKey[Session] = web.RequestKey("console_session")
SCHEME: web.RequestKey[str] = web.RequestKey("console_scheme")


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"paygate-console-session-v1", hashlib.sha256).digest()


def csrf_token(secret: str, sid: str) -> str:
    return hmac.new(_key(secret), b"csrf:" + sid.encode(), hashlib.sha256).hexdigest()


def new_session(
    secret: str,
    ops_token: str,
    policy: TokenPolicy = tokens.DEFAULT_POLICY,
    *,
    now: float | None = None,
) -> tuple[str, Session]:
    """The cookie value and session for a valid ops token; Unauthorized or Forbidden
    otherwise. (Whether the token is revoked is the caller's to ask: `session.tid`.)"""
    claims = tokens.verify(ops_token, secret, policy)
    principal = claims.principal
    if not principal.allows(READ):
        raise Forbidden("this token carries no ops role (ops:read or ops:write)")
    issued = int(time.time() if now is None else now)
    expires = min(claims.expires, issued + SESSION_SECONDS)
    sid = secrets.token_urlsafe(18)
    cookie = jwt.encode(
        {"sub": principal.subject, "roles": sorted(principal.roles), "iat": issued,
         "exp": expires, "sid": sid, "tid": claims.token_id, "typ": "console"},
        _key(secret).hex(), algorithm=ALGORITHM,
    )  # fmt: skip
    return cookie, Session(principal, sid, expires, claims.token_id)


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
    tid = claims.get("tid")
    return Session(Principal(str(claims["sub"]), roles), claims["sid"], int(claims["exp"]),
                   tid if isinstance(tid, str) else "")  # fmt: skip


def scheme(request: web.Request) -> str:
    """The scheme the browser used (the gate sets it for every console request)."""
    return request.get(SCHEME) or request.scheme


def set_cookie(response: web.StreamResponse, request: web.Request, name: str, value: str,
               max_age: int) -> None:  # fmt: skip
    response.set_cookie(
        name, value, max_age=max(0, max_age), path=PREFIX, httponly=True, samesite="Strict",
        secure=scheme(request) == "https",
    )  # fmt: skip


def security_headers(request: web.Request) -> dict[str, str]:
    """HSTS once the browser came over https (telling a plain-http visitor is meaningless)."""
    return {"Strict-Transport-Security": HSTS} if scheme(request) == "https" else {}


def in_console(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not sent (older browsers, same-origin GET): the token still decides
    parts = urlsplit(origin)
    return parts.netloc == request.host and parts.scheme == scheme(request)


def console_gates(settings: Settings, revocations: Revocations) -> dict[Access, Gate]:
    """The gates of the console's routes, by the access each declares: a live (not
    revoked) session and its role for the pages and actions, a same-origin check on every
    action. Each notes the scheme the browser used (behind a trusted proxy too)."""
    secret = settings.admin_jwt_secret
    trusted = settings.trusted_proxies

    def note_scheme(request: web.Request) -> None:
        request[SCHEME] = external_scheme(
            request.scheme, request.remote, trusted, force_https=settings.force_https,
            x_forwarded_proto=request.headers.getall("X-Forwarded-Proto", ()),
            forwarded=request.headers.getall("Forwarded", ()),
        )  # fmt: skip

    def sign_in(request: web.Request) -> None:
        note_scheme(request)
        if request.method not in SAFE_METHODS:
            _check_origin(request)

    def session_with(role: str | None) -> Gate:
        def require_console_session(request: web.Request) -> Awaitable[None]:
            note_scheme(request)
            if request.method not in SAFE_METHODS:
                _check_origin(request)
            session = read_session(secret, request.cookies.get(COOKIE))
            if session is None:
                return _signed_out(request)
            allowed = role is None or session.principal.allows(role)
            return _live_session(request, revocations, session, None if allowed else role)

        return require_console_session

    return {
        Access.CONSOLE_SIGN_IN: sign_in,
        Access.CONSOLE_SESSION: session_with(None),
        Access.CONSOLE_READ: session_with(READ),
        Access.CONSOLE_WRITE: session_with(WRITE),
    }


async def _signed_out(request: web.Request) -> None:
    if request.method in SAFE_METHODS:
        raise web.HTTPSeeOther(f"{PREFIX}/login")
    raise Unauthorized("sign in first", code="unauthorized")


async def _live_session(
    request: web.Request, revocations: Revocations, session: Session, missing_role: str | None
) -> None:
    """A signed-out (revoked) session, or one whose token was revoked, is no session; a
    live one without the role is refused on a page that still shows who is signed in."""
    if await revocations.any_revoked([session.sid, session.tid]):
        await _signed_out(request)
    request[SESSION] = session
    if missing_role is not None:
        raise Forbidden(f"this action needs the {missing_role} role", code="forbidden")


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
