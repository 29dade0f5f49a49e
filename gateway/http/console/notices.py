"""The one-line notice a page shows after an action (post/redirect/get), by code only.

An action names a code from `NOTICES` and the values its sentence needs; the redirect
carries them in a short-lived cookie signed for this session, and the next page shows
the sentence once. So a link cannot make the console say anything (`/console?notice=…`
is ignored: there is no such parameter), and each notice has a kind the page shows: a
refusal is never drawn as a success.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

import orjson
from aiohttp import web

from gateway import appkeys
from gateway.http.console.session import scheme

COOKIE = "paygate_notice"
MAX_AGE = 60
_VALUE_MAX = 300

OK, WARNING, ERROR = "ok", "warning", "error"

# code -> (kind, sentence); the sentence's {names} are filled from the action's values.
NOTICES: dict[str, tuple[str, str]] = {
    "replay_done": (OK, "replayed: {status} {outcome}{payment}"),
    "replay_refused": (ERROR, "replay refused: {status} {outcome}"),
    "replay_failed": (ERROR, "replay failed: {status} {outcome}"),
    "dead_letters_requeued": (OK, "re-queued {count} event(s)"),
    "dead_letters_none_chosen": (WARNING, "choose dead letters to replay"),
    "statement_imported": (OK, "imported: {exceptions} exception(s)"),
    "statement_refused": (ERROR, "statement refused: {reason}"),
    "statement_already_imported": (
        WARNING,
        "already imported: this statement's run is shown, nothing was added",
    ),
    "statement_missing": (WARNING, "choose a statement file"),
    "statement_option_invalid": (ERROR, "{field}: {detail}"),
    "exception_assigned": (OK, "assigned"),
    "exception_resolved": (OK, "resolved: {resolution}"),
    "exception_commented": (OK, "comment added"),
    "exception_suggestion_accepted": (OK, "suggested match accepted: resolved as matched_manually"),
    "exception_refused": (ERROR, "refused: {detail}"),
    "bulk_done": (OK, "{action}: {done} done, {refused} refused"),
    "bulk_partly_refused": (WARNING, "{action}: {done} done, {refused} refused"),
    "bulk_none_chosen": (WARNING, "choose exceptions first"),
    "bulk_refused": (ERROR, "refused: {detail}"),
    "export_refused": (ERROR, "export refused: {detail}"),
}


@dataclass(frozen=True, slots=True)
class Notice:
    kind: str  # OK, WARNING or ERROR
    text: str


def _signature(request: web.Request, sid: str, payload: bytes) -> str:
    secret = request.app[appkeys.SETTINGS].admin_jwt_secret.encode()
    key = hmac.new(secret, b"paygate-console-notice-v1", hashlib.sha256).digest()
    return hmac.new(key, sid.encode() + b"\0" + payload, hashlib.sha256).hexdigest()[:32]


def attach(response: web.StreamResponse, request: web.Request, sid: str, code: str,
           values: dict[str, object]) -> None:  # fmt: skip
    """Set the notice `code` (with `values`) for the next page of session `sid`."""
    if code not in NOTICES:
        raise KeyError(code)
    shown = {k: str(v)[:_VALUE_MAX] for k, v in values.items()}
    payload = base64.urlsafe_b64encode(orjson.dumps([code, shown])).rstrip(b"=")
    value = f"{payload.decode()}.{_signature(request, sid, payload)}"
    response.set_cookie(COOKIE, value, max_age=MAX_AGE, path="/console", httponly=True,
                        samesite="Strict", secure=scheme(request) == "https")  # fmt: skip


def take(request: web.Request, sid: str | None) -> Notice | None:
    """The notice waiting for this session, if a valid one is (the page clears it)."""
    raw = request.cookies.get(COOKIE)
    if not raw or not sid:
        return None
    payload, _, signature = raw.partition(".")
    if not hmac.compare_digest(signature, _signature(request, sid, payload.encode())):
        return None
    try:
        code, values = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        kind, sentence = NOTICES[code]
        return Notice(kind, sentence.format(**values))
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def clear(response: web.StreamResponse, request: web.Request) -> None:
    if COOKIE in request.cookies:
        response.del_cookie(COOKIE, path="/console")
