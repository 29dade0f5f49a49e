"""Reading a console action's form, after its CSRF token is checked."""

from __future__ import annotations

from aiohttp import web
from multidict import MultiDictProxy

from gateway import appkeys
from gateway.http.console import notices
from gateway.http.console.session import CSRF_FIELD, SESSION, check_csrf, security_headers


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


def back(request: web.Request, location: str, code: str, **values: object) -> web.HTTPSeeOther:
    """Post/redirect/get: where an action's browser goes next, with the notice `code`
    (gateway.http.console.notices) for the page it lands on."""
    response = web.HTTPSeeOther(location, headers=security_headers(request))
    notices.attach(response, request, request[SESSION].sid, code, values)
    return response
