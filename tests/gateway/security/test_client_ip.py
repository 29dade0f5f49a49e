"""Client address resolution: forwarding headers count only from trusted proxies."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.security.allowlist import allowed
from gateway.security.client_ip import client_ip, parse_ip

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
ip = ipaddress.ip_address


def test_headers_from_an_untrusted_peer_are_ignored() -> None:
    assert client_ip("198.51.100.7", PROXIES, x_forwarded_for=["203.0.113.9"]) == ip("198.51.100.7")
    assert client_ip("198.51.100.7", (), forwarded=["for=203.0.113.9"]) == ip("198.51.100.7")


def test_rightmost_untrusted_hop_is_the_client() -> None:
    # the client forged the leftmost entry; our proxies appended the rest
    xff = ["1.2.3.4, 203.0.113.9, 10.1.1.1"]
    assert client_ip("10.0.0.2", PROXIES, x_forwarded_for=xff) == ip("203.0.113.9")


def test_header_lines_are_joined_in_order() -> None:
    assert client_ip("10.0.0.2", PROXIES, x_forwarded_for=["203.0.113.9", "10.2.2.2"]) == ip(
        "203.0.113.9"
    )


def test_all_hops_trusted_gives_the_leftmost() -> None:
    assert client_ip("10.0.0.2", PROXIES, x_forwarded_for=["10.3.3.3"]) == ip("10.3.3.3")


def test_trusted_peer_without_headers_is_the_client() -> None:
    assert client_ip("10.0.0.2", PROXIES) == ip("10.0.0.2")


@pytest.mark.parametrize(
    "header, expected",
    [
        ("for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60"),
        ('for="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
        ('For="192.0.2.43:47011", for=10.9.9.9', "192.0.2.43"),
    ],
)
def test_rfc7239_forwarded(header: str, expected: str) -> None:
    assert client_ip("10.0.0.2", PROXIES, forwarded=[header]) == ip(expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"x_forwarded_for": ["not-an-ip"]},
        {"forwarded": ["for=unknown"]},
        {"forwarded": ["for=_hidden"]},
        {"forwarded": ["proto=https"]},  # an element without for=
        {"x_forwarded_for": ["203.0.113.9"], "forwarded": ["for=198.51.100.1"]},  # disagree
        {"x_forwarded_for": [",".join(["10.0.0.1"] * 40)]},  # absurd chain
    ],
)
def test_doubtful_chains_give_no_client(kwargs: dict[str, list[str]]) -> None:
    assert client_ip("10.0.0.2", PROXIES, **kwargs) is None


def test_agreeing_headers_are_accepted() -> None:
    got = client_ip(
        "10.0.0.2", PROXIES, x_forwarded_for=["203.0.113.9"], forwarded=["for=203.0.113.9"]
    )
    assert got == ip("203.0.113.9")


def test_no_peer_is_unknown() -> None:
    assert client_ip(None, PROXIES) is None


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("192.0.2.1", "192.0.2.1"),
        ("192.0.2.1:8080", "192.0.2.1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ('"192.0.2.1"', "192.0.2.1"),
    ],
)
def test_parse_ip(raw: str, expected: str) -> None:
    assert parse_ip(raw) == ip(expected)


@pytest.mark.parametrize("raw", ["", "unknown", "[2001:db8::1", "fe80::1%eth0", "999.1.1.1"])
def test_parse_ip_rejects(raw: str) -> None:
    assert parse_ip(raw) is None


def test_ipv4_mapped_peer_matches_an_ipv4_allowlist() -> None:
    addr = client_ip("::ffff:203.0.113.9", ())
    assert allowed(addr, (ipaddress.ip_network("203.0.113.0/24"),))


def test_allowlist() -> None:
    nets = (ipaddress.ip_network("203.0.113.0/24"), ipaddress.ip_network("2001:db8::/32"))
    assert allowed(ip("203.0.113.200"), nets)
    assert allowed(ip("2001:db8::5"), nets)
    assert not allowed(ip("198.51.100.1"), nets)
    assert not allowed(ip("2001:db9::5"), nets)
    assert not allowed(None, nets)  # unknown client: closed
    assert allowed(None, ())  # no list: open to all
    assert allowed(ip("198.51.100.1"), ())
