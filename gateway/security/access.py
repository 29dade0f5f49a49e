"""Who may call a route: every route in the route table declares one `Access`.

Authentication is decided from the route aiohttp matched, never from the path text: a
path can be spelled many ways (`%2F`, `%252F`, dot segments) and only the router knows
which handler it reaches. The request context (gateway.http.context) runs the gate the
app registered for the route's access (`appkeys.ACCESS_GATES`) before the handler; an
app whose table has a route without an access, or an access without a registered gate,
refuses to build.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

# A gate raises a PaygateError to refuse; it returns an awaitable when the decision needs
# I/O (a revocation lookup), which the request context awaits before the handler.
Gate = Callable[[web.Request], Awaitable[None] | None]


class Access(enum.Enum):
    PUBLIC = "public"  # anyone: health, metrics, the 404/405 catch-all
    SIGNED = "signed"  # anyone may call; the channel's signature, checked by the handler, decides
    OPS_READ = "ops:read"  # a bearer token with ops:read (or ops:write)
    OPS_WRITE = "ops:write"  # a bearer token with ops:write
    CONSOLE_SIGN_IN = (
        "console:sign-in"  # no session needed (sign-in, static files); actions same-origin
    )
    CONSOLE_SESSION = "console:session"  # any signed-in console session, whatever its role
    CONSOLE_READ = "console:read"  # a console session with ops:read (or ops:write)
    CONSOLE_WRITE = "console:write"  # a console session with ops:write; actions same-origin

    @property
    def private(self) -> bool:
        """Answers that may carry personal data: never stored by a cache (`no-store`)."""
        return self not in (Access.PUBLIC, Access.SIGNED)

    @property
    def console(self) -> bool:
        return self.value.startswith("console:")


# Routes anyone may reach: no gate runs (`None` in ACCESS_GATES).
OPEN = frozenset({Access.PUBLIC, Access.SIGNED})


def missing_gates(gates: Mapping[Access, Gate | None]) -> list[Access]:
    """Accesses with no decision registered: an open route must say so with `None`."""
    return [a for a in Access if a not in gates or (gates[a] is None and a not in OPEN)]
