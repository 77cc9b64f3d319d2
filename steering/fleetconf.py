"""Reading the fleet file: sites with coordinates, their appliances (id, base URL, capacity) and the
client prefixes each serves. Two shapes:

TOML (native):
    [[sites]]
    id = "ams"
    latitude = 52.37
    longitude = 4.90
    prefixes = ["192.0.2.0/24", "2001:db8::/32"]
    [[sites.appliances]]
    id = "ams-1"
    base_url = "https://ams-1.oca.example.net"
    capacity_gbps = 10

JSON, Traffic Control's coverage-zone file, each zone extended with its appliances:
    {"coverageZones": {"ams": {"network": ["192.0.2.0/24"], "network6": ["2001:db8::/32"],
      "coordinates": {"latitude": 52.37, "longitude": 4.90},
      "appliances": [{"id": "ams-1", "base_url": "...", "capacity_gbps": 10}]}}}

Errors are ConfigErrors naming the dotted key.
"""
from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from contracts.ids import ApplianceId, SiteId
from contracts.tomlconf import ConfigError, Section, read_toml
from steering.core.fleet import ApplianceSpec, Fleet, SiteSpec, build_fleet

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")  # the heartbeat's id grammar
GBPS = 1_000_000_000


def load_fleet(path: Path) -> Fleet:
    path = Path(path)
    if path.suffix.lower() == ".json":
        try:
            mapping = json.loads(path.read_bytes())
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"{path}: not valid JSON: {exc}") from None
        return parse_fleet(mapping)
    return parse_fleet(read_toml(path))


def parse_fleet(mapping: Mapping[str, Any]) -> Fleet:
    top = Section(mapping)
    if top.has("coverageZones"):
        sites = _zones(top.raw("coverageZones"))
    else:
        sites = [_site(s) for s in top.sections("sites")]
    top.done()
    return build_fleet(sites)


def _site(s: Section) -> SiteSpec:
    site_id = SiteId(_ident(s, "id"))
    site = SiteSpec(
        id=site_id,
        latitude=s.float("latitude", min=-90, max=90),
        longitude=s.float("longitude", min=-180, max=180),
        appliances=tuple(_appliance(a, site_id) for a in s.sections("appliances", [])),
        prefixes=_prefixes(s, "prefixes", None),
    )
    s.done()
    return site


def _zones(zones: Any) -> list[SiteSpec]:
    if not isinstance(zones, Mapping) or not zones:
        raise ConfigError("coverageZones: must be an object with at least one zone")
    sites = []
    for name, raw in zones.items():
        zone = Section(raw, f"coverageZones.{name}")
        if not _ID.fullmatch(name):
            raise ConfigError(f"coverageZones.{name}: zone name must be 1-64 of [A-Za-z0-9_.-]")
        coords = zone.section("coordinates")
        sites.append(SiteSpec(
            id=SiteId(name),
            latitude=coords.float("latitude", min=-90, max=90),
            longitude=coords.float("longitude", min=-180, max=180),
            appliances=tuple(_appliance(a, SiteId(name)) for a in zone.sections("appliances", [])),
            prefixes=(*_prefixes(zone, "network", 4), *_prefixes(zone, "network6", 6)),
        ))
        coords.done()
        zone.done()
    return sites


def _appliance(a: Section, site: SiteId) -> ApplianceSpec:
    spec = ApplianceSpec(
        id=ApplianceId(_ident(a, "id")),
        site=site,
        base_url=_base_url(a, "base_url"),
        capacity_bps=int(a.float("capacity_gbps", min=0.001, max=100_000) * GBPS),
    )
    a.done()
    return spec


def _prefixes(s: Section, name: str, version: int | None) -> tuple[str, ...]:
    """Normalised networks; host bits set is an error (a typo'd prefix must not silently widen)."""
    out = []
    for i, raw in enumerate(s.str_list(name, [])):
        try:
            net = ipaddress.ip_network(raw.strip(), strict=True)
        except ValueError as exc:
            raise ConfigError(f"{s.key(name)}[{i}]: {exc}") from None
        if version is not None and net.version != version:
            raise ConfigError(f"{s.key(name)}[{i}]: {raw} is not an IPv{version} network")
        out.append(str(net))
    return tuple(out)


def _ident(s: Section, name: str) -> str:
    value = s.str(name)
    if not _ID.fullmatch(value):
        raise ConfigError(f"{s.key(name)}: must be 1-64 of [A-Za-z0-9_.-], starting with a letter or digit")
    return value


def _base_url(s: Section, name: str) -> str:
    value = s.str(name)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"{s.key(name)}: must be an http(s) URL without query, e.g. https://oca-1.example.net")
    return value.rstrip("/")
