"""IP networks as plain ints, parsed strictly and fast: BGP tables of ~10^5-10^6 routes are checked
on the appliance (oca.bgp) and again in every heartbeat steering decodes, and the ipaddress module
costs several microseconds a network. `parse_prefix("192.0.2.0/24")` -> `Net(4, 0xC0000200, 24)`;
host bits set, a length out of range or any other spelling than the canonical one is refused
(ValueError), so one network has one text on the wire and one key in every table.
"""
from __future__ import annotations

import socket
from typing import NamedTuple

_pton, _ntop = socket.inet_pton, socket.inet_ntop
_AF6 = socket.AF_INET6
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}
WIDTH = {4: 32, 6: 128}


class Net(NamedTuple):
    version: int  # 4 or 6
    value: int  # the network address as an int (host bits zero)
    length: int  # prefix length

    def contains(self, other: "Net") -> bool:
        """Whether `other` lies inside this network (or is it)."""
        if other.version != self.version or other.length < self.length:
            return False
        shift = WIDTH[self.version] - self.length
        return other.value >> shift == self.value >> shift

    def __str__(self) -> str:
        raw = self.value.to_bytes(4 if self.version == 4 else 16, "big")
        return f"{socket.inet_ntop(_AF[self.version], raw)}/{self.length}"


def parse_prefix(text: str) -> Net:
    """The network `text` names, in canonical form only; raises ValueError saying why not."""
    if not isinstance(text, str) or len(text) > 49:
        raise ValueError("not a network")
    addr, slash, bits = text.partition("/")
    if not slash or not bits.isdigit() or len(bits) > 3 or (bits[0] == "0" and bits != "0"):
        raise ValueError(f"{text!r:.60}: not address/length")
    version = 6 if ":" in addr else 4
    try:
        value = int.from_bytes(_pton(_AF[version], addr), "big")
    except (OSError, ValueError):
        raise ValueError(f"{text!r:.60}: not an IPv{version} address") from None
    length, width = int(bits), WIDTH[version]
    if length > width:
        raise ValueError(f"{text!r:.60}: length above /{width}")
    if value & ((1 << (width - length)) - 1):
        raise ValueError(f"{text!r:.60}: host bits set")
    net = Net(version, value, length)
    if version == 6 and _ntop(_AF6, value.to_bytes(16, "big")) != addr:  # one spelling: RFC 5952's
        raise ValueError(f"{text!r:.60}: not canonical (write {net})")
    return net  # inet_pton takes IPv4 only as a plain dotted quad


def covers(nets: "tuple[Net, ...]", net: Net) -> bool:
    """Whether any of `nets` contains `net`."""
    return any(n.contains(net) for n in nets)


__all__ = ["Net", "parse_prefix", "covers", "WIDTH"]
