"""The console's stylesheet and script, read from the package (so a non-editable install
serves them as well as a checkout)."""

from __future__ import annotations

import functools
from importlib import resources

from aiohttp import web

from gateway.errors import NotFound

TYPES = {".css": "text/css", ".js": "text/javascript"}


@functools.cache
def _read(name: str) -> bytes | None:
    path = resources.files("gateway.http.console").joinpath("static", name)
    return path.read_bytes() if path.is_file() else None


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    kind = next((t for ext, t in TYPES.items() if name.endswith(ext)), None)
    data = _read(name) if kind and "/" not in name and not name.startswith(".") else None
    if data is None:
        raise NotFound("no such file")
    return web.Response(
        body=data, content_type=kind,
        headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
    )  # fmt: skip
