"""The scheme the browser used: `https` behind a TLS-terminating proxy, not the `http`
of the proxy's own connection to us.

`X-Forwarded-Proto` and RFC 7239 `Forwarded: proto=` are written by anyone, so they count
only when the TCP peer is one of TRUSTED_PROXIES; the value the nearest proxy wrote (the
last one) decides. FORCE_HTTPS says https whatever the connection, for a proxy that
cannot be listed or sends neither header. The console's cookie is `Secure`, its Origin
check compares, and HSTS is sent, by this scheme.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.security.client_ip import IPNetwork, is_trusted, parse_ip

SCHEMES = frozenset({"http", "https"})


def _last_forwarded_proto(values: Sequence[str]) -> str | None:
    """`proto=` of the last element of the Forwarded header lines, if it has one."""
    elements = [e for v in values for e in v.split(",") if e.strip()]
    if not elements:
        return None
    for pair in elements[-1].split(";"):
        name, _, token = pair.partition("=")
        if name.strip().lower() == "proto":
            return token.strip().strip('"').lower()
    return None


def external_scheme(
    connection_scheme: str,
    peer: str | None,
    trusted: Sequence[IPNetwork],
    *,
    force_https: bool = False,
    x_forwarded_proto: Sequence[str] = (),
    forwarded: Sequence[str] = (),
) -> str:
    if force_https:
        return "https"
    addr = parse_ip(peer) if peer else None
    if addr is None or not trusted or not is_trusted(addr, trusted):
        return connection_scheme
    told = _last_forwarded_proto(forwarded)
    if told is None and x_forwarded_proto:
        told = x_forwarded_proto[-1].split(",")[-1].strip().lower()
    return told if told in SCHEMES else connection_scheme
