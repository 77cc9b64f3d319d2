"""Longest-prefix match: table cases, and hypothesis against a brute-force scan."""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings, strategies as st

from contracts.token import client_prefix_for
from steering.core.prefixes import InvalidClientAddress, PrefixTable, client_key, parse_address, token_prefix

TABLE = PrefixTable([
    ("10.0.0.0/8", "a"), ("10.1.0.0/16", "b"), ("10.1.2.0/24", "c"), ("10.1.2.128/25", "d"),
    ("0.0.0.0/0", "any4"), ("2001:db8::/32", "v6"), ("2001:db8:1::/48", "v6-48"), ("192.0.2.7/32", "host"),
])


@pytest.mark.parametrize("address, expected", [
    ("10.9.9.9", "a"),
    ("10.1.9.9", "b"),
    ("10.1.2.3", "c"),
    ("10.1.2.200", "d"),
    ("11.0.0.1", "any4"),
    ("192.0.2.7", "host"),
    ("192.0.2.8", "any4"),
    ("::ffff:10.1.2.3", "c"),  # IPv4-mapped IPv6 counts as IPv4
    ("2001:db8::1", "v6"),
    ("2001:db8:1:ffff::1", "v6-48"),
    ("2001:db9::1", None),
    ("::1", None),
], ids=["/8", "/16", "/24", "/25", "default-route", "/32", "beside-/32", "v4-mapped", "v6-/32", "v6-/48",
        "v6-miss", "v6-loopback"])
def test_longest_prefix_wins(address: str, expected: str | None) -> None:
    assert TABLE.lookup(parse_address(address)) == expected


@pytest.mark.parametrize("address", ["", "10.1.2", "10.1.2.256", "fe80::1%eth0", "example.com", "1.2.3.4/24"],
                         ids=["empty", "three-octets", "octet-256", "zone-id", "name", "with-length"])
def test_bad_addresses_are_refused_with_400(address: str) -> None:
    with pytest.raises(InvalidClientAddress) as err:
        parse_address(address)
    assert err.value.status_hint == 400


@pytest.mark.parametrize("network", ["10.0.0.1/8", "2001:db8::1/32", "300.0.0.0/8", "10.0.0.0/33"],
                         ids=["v4-host-bits", "v6-host-bits", "bad-octet", "bad-length"])
def test_malformed_networks_are_refused(network: str) -> None:
    with pytest.raises(ValueError):
        PrefixTable([(network, "x")])


def test_lookup_with_prefix_names_the_match() -> None:
    assert TABLE.lookup_with_prefix(parse_address("10.1.2.200")) == ("10.1.2.128/25", "d")
    assert TABLE.lookup_with_prefix(parse_address("2001:db8:1::5")) == ("2001:db8:1::/48", "v6-48")
    assert len(TABLE) == 8


@pytest.mark.parametrize("address, v4, v6", [
    ("192.0.2.77", 24, 48), ("::ffff:10.1.2.3", 24, 48), ("2001:db8:1:2:3::9", 24, 48),
    ("203.0.113.9", 32, 128), ("2001:db8::1", 16, 56), ("0.0.0.0", 0, 0)],
    ids=["v4", "v4-mapped", "v6", "full-length", "odd-lengths", "zero"])
def test_token_prefix_matches_the_contract(address: str, v4: int, v6: int) -> None:
    ours, contract = token_prefix(parse_address(address), v4, v6), client_prefix_for(address, v4, v6)
    assert ours == contract and str(ours) == str(contract) and str(ours) == str(ours)
    assert token_prefix(parse_address(address), v4, v6) is ours  # memoised per prefix


def test_client_key_is_per_prefix_and_per_family() -> None:
    a, b, c = (client_key(parse_address(x)) for x in ("192.0.2.1", "192.0.2.250", "192.0.3.1"))
    assert a == b != c
    assert client_key(parse_address("::c000:201")) != a  # a v6 address with the same low bits


networks_v4 = st.builds(lambda v, n: str(ipaddress.IPv4Network((v >> (32 - n) << (32 - n), n))),
                        st.integers(0, 2**32 - 1), st.integers(0, 32))


@settings(max_examples=60, deadline=None)
@given(st.lists(networks_v4, min_size=1, max_size=40, unique=True), st.lists(st.integers(0, 2**32 - 1), max_size=20))
def test_matches_a_brute_force_scan(networks: list[str], addresses: list[int]) -> None:
    table = PrefixTable((n, n) for n in networks)
    parsed = [ipaddress.IPv4Network(n) for n in networks]
    for value in addresses + [int(p.network_address) for p in parsed]:
        ip = ipaddress.IPv4Address(value)
        inside = [p for p in parsed if ip in p]
        expected = str(max(inside, key=lambda p: p.prefixlen)) if inside else None
        assert table.lookup(parse_address(str(ip))) == expected
