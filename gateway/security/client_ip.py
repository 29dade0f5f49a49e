"""Who is really calling: the peer address, or the client a trusted proxy names.

`X-Forwarded-For` and RFC 7239 `Forwarded` are written by anyone, so they count only
when the TCP peer is one of TRUSTED_PROXIES. The chain (header entries, then the peer)
is walked from the right, skipping trusted proxies; the first untrusted address is the
client ("rightmost untrusted"), because everything left of it may be forged.

Anything doubtful yields None (unknown client), which an allowlist refuses: a malformed
hop, an obfuscated `for=` token, or both headers present and disagreeing (a proxy that
appends one header may pass the other through from the client untouched).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_MAX_HOPS = 32


def parse_ip(raw: str) -> IPAddress | None:
    """An address as a proxy writes it (IPv4-mapped IPv6 folded to IPv4), else None."""
    text = raw.strip().strip('"')
    if text.startswith("["):  # "[2001:db8::1]:4711"
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # "192.0.2.1:8080"
        text = text.split(":", 1)[0]
    if "%" in text:  # zone ids never name a remote client
        return None
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def is_trusted(addr: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(addr.version == net.version and addr in net for net in trusted)


def forwarded_for_chain(values: Iterable[str]) -> list[str] | None:
    """The `X-Forwarded-For` hops, left to right, over every header line."""
    hops = [hop.strip() for value in values for hop in value.split(",")]
    return hops if len(hops) <= _MAX_HOPS else None


def forwarded_chain(values: Iterable[str]) -> list[str] | None:
    """The `for=` node of each RFC 7239 element, left to right; None if malformed."""
    hops: list[str] = []
    for value in values:
        for element in value.split(","):
            node = None
            for pair in element.split(";"):
                name, sep, token = pair.partition("=")
                if not sep:
                    if pair.strip():
                        return None
                    continue
                if name.strip().lower() == "for":
                    node = token.strip()
            if node is None:
                return None
            hops.append(node)
    return hops if len(hops) <= _MAX_HOPS else None


def _walk(hops: list[str], peer: IPAddress, trusted: Sequence[IPNetwork]) -> IPAddress | None:
    current = peer
    for raw in reversed(hops):
        if not is_trusted(current, trusted):
            return current
        addr = parse_ip(raw)
        if addr is None:
            return None
        current = addr
    return current


def client_ip(
    peer: str | None,
    trusted: Sequence[IPNetwork],
    *,
    x_forwarded_for: Sequence[str] = (),
    forwarded: Sequence[str] = (),
) -> IPAddress | None:
    """The client address for an allowlist decision, or None when it cannot be known."""
    if not peer:
        return None
    peer_addr = parse_ip(peer)
    if peer_addr is None:
        return None
    if not trusted or not is_trusted(peer_addr, trusted):
        return peer_addr
    answers: list[IPAddress | None] = []
    if x_forwarded_for:
        xff = forwarded_for_chain(x_forwarded_for)
        answers.append(None if xff is None else _walk(xff, peer_addr, trusted))
    if forwarded:
        fwd = forwarded_chain(forwarded)
        answers.append(None if fwd is None else _walk(fwd, peer_addr, trusted))
    if not answers:
        return peer_addr
    if len(answers) == 2 and answers[0] != answers[1]:
        return None
    return answers[0]
