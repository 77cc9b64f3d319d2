"""What the appliance accepts from its routers (pure): a route is a client network to serve, so
anything that cannot be one — a default route, a network so short it is half the Internet, a martian
(addresses no client can have), a route with our own AS in its path (a loop), an AS path beyond
`max_as_path_length`, an AS_SET (deprecated, RFC 9774: treated as withdraw) — is refused, and a
session holds at most `max_prefixes` routes: past the cap new prefixes are refused (counted) while
the ones held stay. A refused announcement for a prefix the session held withdraws it (RFC 7606's
treat-as-withdraw), so a route never outlives a bad update of itself.

Martians are the networks that can never be a client's source: this host, loopback, link-local,
multicast and reserved space. Private, CGNAT and documentation ranges are accepted (an ISP may serve
its clients from them, and tests use the documentation ranges); `[bgp] refuse` adds more.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum

from contracts.netprefix import Net, parse_prefix

MARTIANS = tuple(parse_prefix(n) for n in (
    "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4",
    "::/8", "fe80::/10", "ff00::/8",  # ::/8 holds ::, ::1 and IPv4-mapped space
))


class Refusal(str, Enum):
    MALFORMED = "malformed"
    DEFAULT_ROUTE = "default-route"
    TOO_SHORT = "too-short"
    MARTIAN = "martian"
    AS_LOOP = "as-loop"
    AS_PATH_TOO_LONG = "as-path-too-long"
    AS_SET = "as-set"
    OVER_LIMIT = "over-limit"


@dataclass(frozen=True)
class Policy:
    local_as: int
    max_prefixes: int = 100_000
    max_as_path_length: int = 32
    min_length_v4: int = 8
    min_length_v6: int = 16
    refuse: tuple[Net, ...] = ()

    def judge(self, prefix: str, as_path: tuple[int, ...], as_set: bool = False) -> tuple[str, Refusal | None]:
        """(canonical prefix, None) for an acceptable route, else (prefix as given, why not). The cap
        is the table's to apply: it depends on what the session already holds."""
        net = normalise(prefix)
        if net is None:
            return prefix, Refusal.MALFORMED
        text = str(net)
        if net.length == 0:
            return text, Refusal.DEFAULT_ROUTE
        if net.length < (self.min_length_v4 if net.version == 4 else self.min_length_v6):
            return text, Refusal.TOO_SHORT
        if _overlaps(MARTIANS, net) or _overlaps(self.refuse, net):
            return text, Refusal.MARTIAN
        if as_set:
            return text, Refusal.AS_SET
        if self.local_as in as_path:
            return text, Refusal.AS_LOOP
        if len(as_path) > self.max_as_path_length:
            return text, Refusal.AS_PATH_TOO_LONG
        return text, None


def _overlaps(nets: tuple[Net, ...], net: Net) -> bool:
    """Whether `net` lies inside one of `nets` or holds one (a short route over martian space)."""
    return any(n.contains(net) or net.contains(n) for n in nets)


def normalise(prefix: str) -> Net | None:
    """The network in canonical form (ExaBGP's spelling of IPv6 may differ from ours); None if it is
    not a network at all."""
    try:
        return parse_prefix(prefix)
    except ValueError:
        pass
    try:
        return parse_prefix(str(ipaddress.ip_network(prefix, strict=True)))
    except (ValueError, TypeError):
        return None


__all__ = ["MARTIANS", "Policy", "Refusal", "normalise"]
