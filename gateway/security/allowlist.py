"""Per-channel source allowlist: an empty list allows every source.

With a list, an unknown client (see client_ip) is refused: the allowlist fails closed.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.security.client_ip import IPAddress, IPNetwork


def allowed(addr: IPAddress | None, networks: Sequence[IPNetwork]) -> bool:
    if not networks:
        return True
    if addr is None:
        return False
    return any(addr.version == net.version and addr in net for net in networks)
