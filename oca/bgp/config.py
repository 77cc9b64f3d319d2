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
from dataclasses import dataclass
from pathlib import Path

from contracts.netprefix import Net, parse_prefix
from contracts.tomlconf import ConfigError, Section

MAX_PEERS = 16  # contracts.heartbeat.MAX_SESSIONS
_PASSWORD = re.compile(r"[!#-&(-:<-\[\]-z|~]{1,80}")  # what ExaBGP's config tokeniser passes unharmed


@dataclass(frozen=True)
class PeerConfig:
    name: str  # shown in `oca bgp`, /v1/health and metrics labels
    address: str
    local_address: str
    peer_as: int
    passive: bool = False
    port: int = 179
    listen_port: int = 179
    password: str | None = None

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.address).version


@dataclass(frozen=True)
class BgpConfig:
    local_as: int
    router_id: str
    peers: tuple[PeerConfig, ...]
    hold_time_s: int = 90
    max_prefixes: int = 100_000
    max_as_path_length: int = 32
    min_prefix_length_v4: int = 8
    min_prefix_length_v6: int = 16
    refuse: tuple[Net, ...] = ()
    exabgp: Path | None = None


def parse_bgp(s: Section, base: Path | None) -> BgpConfig:
    local_as = _asn(s, "local_as")
    default_as = _asn(s, "peer_as", None)
    passive = s.bool("passive", False)
    peers: list[PeerConfig] = []
    for p in s.sections("peers"):
        peers.append(_peer(p, default_as, passive, [q.version for q in peers]))
    if not 0 < len(peers) <= MAX_PEERS:
        raise ConfigError(f"{s.key('peers')}: 1..{MAX_PEERS} peers")
    names = [p.name for p in peers]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"{s.key('peers')}[{i}].name: {name!r} used twice")
    router_id = s.str("router_id", None) or next((p.local_address for p in peers if p.version == 4), None)
    if router_id is None:
        raise ConfigError(f"{s.key('router_id')}: required when no peer has an IPv4 local_address")
    _address(s, "router_id", router_id, version=4)
    cfg = BgpConfig(
        local_as=local_as, router_id=router_id, peers=tuple(peers),
        hold_time_s=s.int("hold_time_s", 90, min=3, max=65535),
        max_prefixes=s.int("max_prefixes", 100_000, min=1, max=10_000_000),
        max_as_path_length=s.int("max_as_path_length", 32, min=1, max=255),
        min_prefix_length_v4=s.int("min_prefix_length_v4", 8, min=1, max=32),
        min_prefix_length_v6=s.int("min_prefix_length_v6", 16, min=1, max=128),
        refuse=_networks(s, "refuse"),
        exabgp=s.path("exabgp", None, base=base),
    )
    s.done()
    return cfg


def _peer(p: Section, default_as: int | None, passive: bool, before: list[int]) -> PeerConfig:
    """One [[bgp.peers]] table; unnamed peers are called v4, v6, v4-2, ... (`before`: earlier ones' IP versions)."""
    address = _address(p, "address", p.str("address"))
    local = _address(p, "local_address", p.str("local_address"))
    if ipaddress.ip_address(address).version != ipaddress.ip_address(local).version:
        raise ConfigError(f"{p.key('local_address')}: must be of the same IP version as address")
    peer_as = _asn(p, "peer_as", default_as)
    if peer_as is None:
        raise ConfigError(f"{p.key('peer_as')}: required (here or as bgp.peer_as)")
    version = ipaddress.ip_address(address).version
    password = p.str("password", None)
    if password is not None and not _PASSWORD.fullmatch(password):
        raise ConfigError(f"{p.key('password')}: 1..80 printable characters without spaces, quotes, "
                          "backslash, ';', '{' or '}' (TCP-MD5)")
    same = before.count(version)
    cfg = PeerConfig(name=p.str("name", f"v{version}" + (f"-{same + 1}" if same else "")),
                     address=address, local_address=local, peer_as=peer_as,
                     passive=p.bool("passive", passive), port=p.int("port", 179, min=1, max=65535),
                     listen_port=p.int("listen_port", 179, min=1, max=65535), password=password)
    if not cfg.name.replace("-", "").replace("_", "").replace(".", "").isalnum() or len(cfg.name) > 32:
        raise ConfigError(f"{p.key('name')}: 1-32 of [A-Za-z0-9_.-]")
    p.done()
    return cfg


def _asn(s: Section, name: str, default: object = ...) -> int:
    value = s.int(name) if default is ... else s.int(name, default)
    if value is not None and not 0 < value < 1 << 32:
        raise ConfigError(f"{s.key(name)}: an AS number is 1..4294967295")
    return value


def _address(s: Section, name: str, text: str, version: int | None = None) -> str:
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"{s.key(name)}: not an IP address: {text!r}") from None
    if version is not None and addr.version != version:
        raise ConfigError(f"{s.key(name)}: must be an IPv{version} address")
    return str(addr)


def _networks(s: Section, name: str) -> tuple[Net, ...]:
    out = []
    for i, text in enumerate(s.str_list(name, [])):
        try:
            out.append(parse_prefix(str(ipaddress.ip_network(text, strict=True))))
        except ValueError as exc:
            raise ConfigError(f"{s.key(name)}[{i}]: {exc}") from None
    return tuple(out)


__all__ = ["BgpConfig", "PeerConfig", "parse_bgp"]
