"""The client's address: the connection's peer, or — only when that peer is a configured trusted proxy —
the rightmost X-Forwarded-For entry that is not itself a trusted proxy (entries to its left are written
by the client and cannot be believed)."""
from __future__ import annotations

import ipaddress
from typing import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(items: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(i, strict=False) for i in items)


def _addr(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # "192.0.2.1:5555"
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _trusted(addr: object, trusted: Sequence[Network]) -> bool:
    return any(addr in net for net in trusted)  # type: ignore[operator]


def client_ip(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str | None:
    """The client's IP as text; None when the peer is unknown or a trusted proxy sent garbage."""
    addr = _addr(peer or "")
    if addr is None:
        return None
    if not forwarded_for or not _trusted(addr, trusted):
        return str(addr)
    for hop in reversed(forwarded_for.split(",")):
        hop_addr = _addr(hop)
        if hop_addr is None:
            return None
        if not _trusted(hop_addr, trusted):
            return str(hop_addr)
        addr = hop_addr
    return str(addr)  # every hop is a proxy of ours: the leftmost one is the best we know
