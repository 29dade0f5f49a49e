"""POST /api/v1/tokens/revoke: put an ops token (or a console session) on the revocation
list by its id (`jti`), so it stops working in every process at its next request.

The list keeps an id until the token could no longer be valid anyway: the token's own
expiry when it is the caller's, else the longest lifetime this deployment accepts.
"""

from __future__ import annotations

import time

from aiohttp import web

from gateway import appkeys
from gateway.errors import ValidationError
from gateway.http.ops_query import actor, answer, json_object
from gateway.security.auth import TOKEN
from gateway.security.tokens import LEEWAY_SECONDS, TOKEN_ID_MAX, is_token_id


async def post_revoke(request: web.Request) -> web.Response:
    doc = await json_object(request)
    token_id = doc.get("jti")
    if not is_token_id(token_id):
        raise ValidationError("jti", f"the token's id: 1 to {TOKEN_ID_MAX} printable characters")
    own = request.get(TOKEN)
    if own is not None and own.token_id == token_id:
        expires = own.expires
    else:
        max_ttl = request.app[appkeys.SETTINGS].ops_token_max_ttl_seconds
        expires = int(time.time()) + max_ttl + LEEWAY_SECONDS
    await request.app[appkeys.REVOCATIONS].revoke(
        token_id, expires, actor=actor(request), reason="api"
    )
    return answer({"revoked": token_id})
