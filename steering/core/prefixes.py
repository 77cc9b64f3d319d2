"""Longest-prefix match of client addresses against the prefixes sites serve.

One dict per prefix length, keyed by the network's integer shifted down to that length, probed from
the longest length present to the shortest: a lookup costs one dict probe per distinct length (a few
dozen at most), independent of the number of prefixes. Addresses are parsed with inet_pton, ~10x
cheaper than the ipaddress module; IPv4-mapped IPv6 addresses count as IPv4.
"""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Generic, Iterable, TypeVar

V = TypeVar("V")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_V4_MAPPED = 0xFFFF
_AF_INET, _AF_INET6 = socket.AF_INET, socket.AF_INET6
_pton = socket.inet_pton


class InvalidClientAddress(ValueError):
    status_hint = 400
    reason = "bad-client"


@dataclass(frozen=True, slots=True)
class ClientAddress:
    text: str  # as given (normalised for IPv4-mapped IPv6)
    version: int  # 4 or 6
    value: int


def parse_address(text: str) -> ClientAddress:
    try:
        return ClientAddress(text, 4, int.from_bytes(_pton(_AF_INET, text), "big"))
    except OSError:
        pass
    try:
        value = int.from_bytes(_pton(_AF_INET6, text), "big")
    except (OSError, ValueError):
        raise InvalidClientAddress(f"not an IP address: {text!r:.64}") from None
    if value >> 32 == _V4_MAPPED:
        v4 = value & 0xFFFFFFFF
        return ClientAddress(str(ipaddress.IPv4Address(v4)), 4, v4)
    return ClientAddress(text, 6, value)


def client_key(addr: ClientAddress, v4_bits: int = 24, v6_bits: int = 48) -> int:
    """The client's prefix as one int (version folded in): what spreading hashes, so every address
    of one /24 (or /48) lands on the same site while a country's many prefixes spread."""
    if addr.version == 4:
        return (addr.value >> (32 - v4_bits)) << 1
    return ((addr.value >> (128 - v6_bits)) << 1) | 1


class _TextOnce:
    """Mixin: a network whose text is formatted once. The token code formats the bound prefix twice
    per signature, and formatting an IPv6 network costs more than the HMAC."""

    def __str__(self) -> str:
        text = self.__dict__.get("_text")
        if text is None:
            text = self.__dict__["_text"] = super().__str__()  # type: ignore[misc]
        return text


class _Prefix4(_TextOnce, ipaddress.IPv4Network):
    pass


class _Prefix6(_TextOnce, ipaddress.IPv6Network):
    pass


_token_prefixes: dict[tuple[int, int, int], IPNetwork] = {}


def token_prefix(addr: ClientAddress, v4_bits: int = 24, v6_bits: int = 48) -> IPNetwork:
    """The network contracts.token.client_prefix_for binds (equal to it), built from the parsed int
    and memoised per prefix: clients of one /24 (or /48) share one object and its formatted text."""
    bits = v4_bits if addr.version == 4 else v6_bits
    shift = (32 if addr.version == 4 else 128) - bits
    key = (addr.version, addr.value >> shift, bits)
    net = _token_prefixes.get(key)
    if net is None:
        if len(_token_prefixes) >= 65536:
            _token_prefixes.clear()  # bounded; rebuilt on demand
        cls = _Prefix4 if addr.version == 4 else _Prefix6
        net = _token_prefixes[key] = cls((key[1] << shift, bits))
    return net


class PrefixTable(Generic[V]):
    """Maps networks to values; `lookup` returns the value of the longest network holding an address."""

    def __init__(self, entries: Iterable[tuple[str, V]] = ()) -> None:
        self._tables: dict[int, dict[int, dict[int, V]]] = {4: {}, 6: {}}
        self._probes: dict[int, list[tuple[int, dict[int, V]]]] = {4: [], 6: []}
        self._count = 0
        for network, value in entries:
            self.add(network, value)

    def __len__(self) -> int:
        return self._count

    def add(self, network: str, value: V) -> None:
        """Add or replace; raises ValueError for a malformed network or one with host bits set."""
        net = ipaddress.ip_network(network, strict=True)
        width = net.max_prefixlen
        tables = self._tables[net.version]
        if net.prefixlen not in tables:
            tables[net.prefixlen] = {}
            self._probes[net.version] = [
                (width - length, table) for length, table in sorted(tables.items(), reverse=True)
            ]
        by_length = tables[net.prefixlen]
        key = int(net.network_address) >> (width - net.prefixlen)
        if key not in by_length:
            self._count += 1
        by_length[key] = value

    def get(self, network: str) -> V | None:
        net = ipaddress.ip_network(network, strict=True)
        table = self._tables[net.version].get(net.prefixlen, {})
        return table.get(int(net.network_address) >> (net.max_prefixlen - net.prefixlen))

    def lookup(self, addr: ClientAddress) -> V | None:
        value = addr.value
        for shift, table in self._probes[addr.version]:
            hit = table.get(value >> shift)
            if hit is not None:
                return hit
        return None

    def lookup_length(self, addr: ClientAddress) -> tuple[int, V] | None:
        """Like lookup, also giving the matched prefix length (to weigh it against a BGP route)."""
        width = 32 if addr.version == 4 else 128
        for shift, table in self._probes[addr.version]:
            hit = table.get(addr.value >> shift)
            if hit is not None:
                return width - shift, hit
        return None

    def lookup_with_prefix(self, addr: ClientAddress) -> tuple[str, V] | None:
        """Like lookup, also naming the matched network (for explanations and logs)."""
        network = ipaddress.IPv4Network if addr.version == 4 else ipaddress.IPv6Network
        width = 32 if addr.version == 4 else 128
        for shift, table in self._probes[addr.version]:
            hit = table.get(addr.value >> shift)
            if hit is not None:
                return str(network(((addr.value >> shift) << shift, width - shift))), hit
        return None
