"""`[bgp]` of oca.toml: the appliance's BGP sessions with the ISP's routers (oca.bgp).

    [bgp]
    local_as = 40027
    peer_as = 64500                # default for every peer
    router_id = "192.0.2.10"       # default: the first IPv4 local address
    hold_time_s = 90               # offered in OPEN; also how long routes outlive a session gone down
    passive = false                # default for every peer: true waits for the router to connect
    max_prefixes = 100000          # per session; the rest are refused (counted, logged)
    max_as_path_length = 32
    min_prefix_length_v4 = 8       # a /0 (a default route) or anything this short is refused
    min_prefix_length_v6 = 16
    refuse = ["100.64.0.0/10"]     # never accepted, besides the built-in martians (oca.bgp.policy)
    exabgp = "/usr/sbin/exabgp"    # default: the exabgp beside this Python, else on PATH

    [[bgp.peers]]                  # typically one IPv4 and one IPv6 session
    address = "192.0.2.1"
    local_address = "192.0.2.10"
    password = "secret"            # TCP-MD5 (RFC 2385), optional
    port = 179                     # the router's port, when we connect
    listen_port = 179              # ours, when passive

The appliance only listens: it announces nothing to the router. No `[bgp]` section: no BGP.
"""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta
from msgspec.structs import force_setattr

from contracts.netprefix import Net, parse_prefix
from contracts.structconf import Conf, invalid

MAX_PEERS = 16  # contracts.heartbeat.MAX_SESSIONS
_PASSWORD = re.compile(r"[!#-&(-:<-\[\]-z|~]{1,80}")  # what ExaBGP's config tokeniser passes unharmed

ASN = Annotated[int, Meta(ge=1, le=(1 << 32) - 1)]
Port = Annotated[int, Meta(ge=1, le=65535)]


class PeerConfig(Conf):
    """One [[bgp.peers]] table. `name`, `peer_as` and `passive` left out are filled in by BgpConfig:
    v4, v6, v4-2, ... (by IP version, in order), bgp.peer_as, bgp.passive."""

    address: str
    local_address: str
    name: str | None = None  # shown in `oca bgp`, /v1/health and metrics labels
    peer_as: ASN | None = None
    passive: bool | None = None  # true: wait for the router to connect
    port: Port = 179  # the router's, when we connect
    listen_port: Port = 179  # ours, when passive
    password: str | None = None  # TCP-MD5 (RFC 2385)

    def __post_init__(self) -> None:
        force_setattr(self, "address", _address(self.address, "address"))
        force_setattr(self, "local_address", _address(self.local_address, "local_address"))
        if ipaddress.ip_address(self.address).version != ipaddress.ip_address(self.local_address).version:
            raise invalid("local_address", "must be of the same IP version as address")
        if self.password is not None and not _PASSWORD.fullmatch(self.password):
            raise invalid("password", "1..80 printable characters without spaces, quotes, backslash, ';', "
                                      "'{' or '}' (TCP-MD5)")
        name = self.name
        if name is not None and (not name.replace("-", "").replace("_", "").replace(".", "").isalnum()
                                 or len(name) > 32):
            raise invalid("name", "1-32 of [A-Za-z0-9_.-]")

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.address).version


class BgpConfig(Conf):
    """[bgp]: oca.toml declares `bgp: BgpConfig | None = None` (relative paths against its folder)."""

    local_as: ASN
    peers: Annotated[tuple[PeerConfig, ...], Meta(min_length=1, max_length=MAX_PEERS)]
    peer_as: ASN | None = None  # default for every peer
    passive: bool = False  # default for every peer
    router_id: str | None = None  # default: the first IPv4 local address (always set once read)
    hold_time_s: Annotated[int, Meta(ge=3, le=65535)] = 90  # offered in OPEN; how long routes outlive a session
    max_prefixes: Annotated[int, Meta(ge=1, le=10_000_000)] = 100_000  # per session; the rest are refused
    max_as_path_length: Annotated[int, Meta(ge=1, le=255)] = 32
    min_prefix_length_v4: Annotated[int, Meta(ge=1, le=32)] = 8
    min_prefix_length_v6: Annotated[int, Meta(ge=1, le=128)] = 16
    # never accepted, besides the built-in martians (oca.bgp.policy); as written, canonical (`refuse` parses)
    refused: tuple[str, ...] = msgspec.field(default=(), name="refuse")
    exabgp: Path | None = None  # default: the exabgp beside this Python, else on PATH

    def __post_init__(self) -> None:
        networks = []
        for i, text in enumerate(self.refused):
            try:
                networks.append(str(parse_prefix(str(ipaddress.ip_network(text, strict=True)))))
            except ValueError as exc:
                raise invalid(f"refuse[{i}]", str(exc)) from None
        force_setattr(self, "refused", tuple(networks))
        self._peer_defaults()
        names = [p.name for p in self.peers]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise invalid(f"peers[{i}].name", f"{name!r} used twice")
        router_id = self.router_id or next((p.local_address for p in self.peers if p.version == 4), None)
        if router_id is None:
            raise invalid("router_id", "required when no peer has an IPv4 local_address")
        force_setattr(self, "router_id", _address(router_id, "router_id", version=4))

    def _peer_defaults(self) -> None:
        before: list[int] = []  # earlier peers' IP versions
        for i, p in enumerate(self.peers):
            if p.peer_as is None:
                if self.peer_as is None:
                    raise invalid(f"peers[{i}].peer_as", "required (here or as bgp.peer_as)")
                force_setattr(p, "peer_as", self.peer_as)
            if p.passive is None:
                force_setattr(p, "passive", self.passive)
            same = before.count(p.version)
            if p.name is None:
                force_setattr(p, "name", f"v{p.version}" + (f"-{same + 1}" if same else ""))
            before.append(p.version)

    @property
    def refuse(self) -> tuple[Net, ...]:
        return tuple(parse_prefix(text) for text in self.refused)


def _address(text: str, field: str, version: int | None = None) -> str:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise invalid(field, f"not an IP address: {text!r}") from None
    if version is not None and addr.version != version:
        raise invalid(field, f"must be an IPv{version} address")
    return str(addr)


__all__ = ["BgpConfig", "PeerConfig"]
