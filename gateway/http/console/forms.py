"""Reading a console action's form, after its CSRF token is checked."""

from __future__ import annotations

from aiohttp import web
from multidict import MultiDictProxy

from gateway import appkeys
from gateway.http.console.session import CSRF_FIELD, check_csrf


async def action_form(
    request: web.Request,
) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """The url-encoded form of a POST, refused (403 csrf_failed) without a valid token."""
    form = await request.post()
    token = form.get(CSRF_FIELD)
    check_csrf(
        request, request.app[appkeys.SETTINGS].admin_jwt_secret,
        token if isinstance(token, str) else None,
    )  # fmt: skip
    return form


def field(form: MultiDictProxy[str | bytes | bytearray | web.FileField], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def back(location: str, notice: str | None = None) -> web.HTTPSeeOther:
    """Post/redirect/get: where an action's browser goes next (with a one-line notice)."""
    from urllib.parse import quote

    sep = "&" if "?" in location else "?"
    return web.HTTPSeeOther(location + (f"{sep}notice={quote(notice)}" if notice else ""))
