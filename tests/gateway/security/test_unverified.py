"""The failed-verification budget per source, with a driven clock."""

from __future__ import annotations

import ipaddress

from gateway.security.unverified import UNKNOWN, UnverifiedSources, source_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_only_failures_spend_a_source_and_it_earns_them_back() -> None:
    clock = Clock()
    sources = UnverifiedSources(0.5, 2, clock=clock)
    assert not sources.busy() and sources.wait("198.51.100.7") == 0.0
    sources.failed("198.51.100.7")
    assert sources.wait("198.51.100.7") == 0.0  # one failure left in the burst
    sources.failed("198.51.100.7")
    assert sources.wait("198.51.100.7") == 2.0  # 1 token at 0.5/s
    assert sources.wait("203.0.113.5") == 0.0  # another source is not affected
    clock.now += 2.0
    assert sources.wait("198.51.100.7") == 0.0
    clock.now += 2.0  # the burst is full again: the source is forgotten
    assert sources.wait("198.51.100.7") == 0.0 and not sources.busy()


def test_the_table_is_bounded_and_off_means_off() -> None:
    sources = UnverifiedSources(1.0, 1, max_sources=3, clock=Clock())
    for i in range(5):
        sources.failed(f"192.0.2.{i}")
    assert sources.wait("192.0.2.0") == 0.0  # the oldest were forgotten
    assert sources.wait("192.0.2.4") > 0
    off = UnverifiedSources(0.0, 1, clock=Clock())
    off.failed("192.0.2.1")
    assert not off.busy()


def test_ipv6_sources_are_grouped_by_their_64() -> None:
    one = source_key(ipaddress.ip_address("2001:db8:1:2::1"))
    other = source_key(ipaddress.ip_address("2001:db8:1:2:ffff::9"))
    assert one == other == "2001:db8:1:2::/64"
    assert source_key(ipaddress.ip_address("192.0.2.1")) == "192.0.2.1"
    assert source_key(None) == UNKNOWN
