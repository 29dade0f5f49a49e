"""Console: dead-lettered events, why they died, and replay."""

from __future__ import annotations

from aiohttp import web

from gateway import appkeys
from gateway.db import dead_letters
from gateway.http.console.forms import action_form, back
from gateway.http.console.render import render
from gateway.http.console.session import SESSION


async def list_page(request: web.Request) -> web.Response:
    items = await dead_letters.list_dead_letters(request.app[appkeys.POOL], 500)
    return render(request, "dead_letters.html", items=items)


async def replay(request: web.Request) -> web.StreamResponse:
    form = await action_form(request)
    ids = [int(v) for v in form.getall("id", []) if isinstance(v, str) and v.isdigit()
           and len(v) < 19]  # fmt: skip
    everything = form.get("all") == "1"
    if not ids and not everything:
        raise back(request, "/console/dead-letters", "dead_letters_none_chosen")
    replayed = await dead_letters.replay(
        request.app[appkeys.POOL], ids, all_=everything,
        actor=request[SESSION].principal.subject,
    )  # fmt: skip
    if replayed:
        request.app[appkeys.OUTBOX_WAKE].ring()
    raise back(request, "/console/dead-letters", "dead_letters_requeued", count=len(replayed))
