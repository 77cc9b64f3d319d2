"""Traffic Control's coverage-zone file (CZF), read as Traffic Router reads it, plus its deep coverage
zones (DCZF), as the fleet: each zone is a site, extended with the appliances that serve it.

    {"revision": "Wed May  4 15:04:01 2016", "customerName": "Acme",
     "coverageZones": {"cache-group-0": {
         "network": ["12.34.0.0/24"], "network6": ["2001:DEAD:BEEF:0::/48"],
         "coordinates": {"latitude": "39.117800", "longitude": "-106.480250"},
         "appliances": [{"id": "cg0-1", "base_url": "https://cg0-1.example.net", "capacity_gbps": 40}]}},
     "deepCoverageZones": {"isp-a": {"network": ["12.34.0.128/25"], "caches": ["isp-a-1", "isp-a-2"]}}}

What Traffic Router accepts, we accept: coordinates as numbers or numeric strings; networks with host
bits set (masked, one warning per network naming zone and value, so the source can be fixed) and in
upper-case hex; the top-level `revision` and `customerName` (the revision is shown by
`steering check-config`, on /v1/fleet and /healthz). Unknown keys — inside zones too — are errors
naming the dotted key, as everywhere in our config.

A network listed in several zones (often only after masking) belongs to all of them. Longest prefix
still decides first; a client whose longest match is such a network has all its zones as its sites:
one first — chosen by capacity-weighted rendezvous on the client's /24 (/48), so a client always gets
the same zone while the network's clients spread over the zones in proportion to their capacity — then
the network's other zones, then every other site nearest the first (steering.core.locate). Traffic
Router keeps the first zone of the file and drops the others silently; we keep them all, and report
each such network as a warning.

Deep zones pin networks to named caches, which our model can express when the caches are whole
sites: every cache must be an appliance of a coverage zone (a zone may carry appliances and
coordinates without networks), and a zone whose appliances a deep zone names must be named entirely;
otherwise the deep zone is refused with an error saying so. A deep network goes to the sites of its
caches, and an identical network in coverageZones gives way to it (Traffic Router tries deep caches
first); a longer or shorter one still competes by prefix length. The deep zones must be in the same
document as the coverage zones (`jq -s '.[0] * .[1]' czf.json dczf.json`); a DCZF alone is refused.

One bad zone does not freeze the fleet: it is skipped and reported (its key and the reason), and,
when the previous fleet had a good version of it that still fits, that version stays in service. With
`strict` (tests, `parse_fleet`) the first bad zone raises instead.
"""
from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import msgspec
from msgspec.structs import force_setattr

from contracts.ids import ApplianceId, SiteId
from contracts.structconf import Conf, ConfigError, convert, invalid
from steering.core.fleet import SiteSpec
from steering.fleetentries import ID, ApplianceEntry

ZONES, DEEP = "coverageZones", "deepCoverageZones"
_SHOW = 5  # zone names listed in one warning


@dataclass(frozen=True)
class DeepPin:
    """A deep zone as read: its networks and the appliance ids they are pinned to."""

    name: str
    networks: tuple[str, ...]
    caches: tuple[ApplianceId, ...]


@dataclass(frozen=True)
class CzfRead:
    sites: tuple[SiteSpec, ...]  # what build_fleet gets: each site's networks after the rules above
    zones: Mapping[SiteId, SiteSpec]  # coverage zones as read (own networks), kept for the next read
    pins: Mapping[str, DeepPin]
    revision: str | None
    customer_name: str | None
    warnings: tuple[str, ...]
    skipped: tuple[str, ...]


# ---- the document's shapes (contracts.structconf: unknown keys refused, errors naming the dotted key) --

class Coordinates(Conf):
    """A zone's place: numbers, or numeric strings as Traffic Control writes them ("39.117800", "-80")."""

    latitude: Any
    longitude: Any

    def __post_init__(self) -> None:
        force_setattr(self, "latitude", _coordinate(self.latitude, "latitude", 90))
        force_setattr(self, "longitude", _coordinate(self.longitude, "longitude", 180))


class Zone(Conf):
    """One of coverageZones: a site. Its networks are normalised by `networks` (which warns)."""

    coordinates: Coordinates
    network: tuple[str, ...] = ()
    network6: tuple[str, ...] = ()
    appliances: tuple[ApplianceEntry, ...] = ()


class DeepZone(Conf):
    """One of deepCoverageZones: networks pinned to caches. Traffic Router places its deep location at
    `coordinates`; our sites have their own, so they are checked and not used."""

    caches: tuple[str, ...]
    network: tuple[str, ...] = ()
    network6: tuple[str, ...] = ()
    coordinates: Coordinates | None = None

    def __post_init__(self) -> None:
        if not self.caches:
            raise invalid("caches", "must name at least one cache")


class Document(Conf):
    """The top level. Zones are read one by one (`_zone`, `_pin`), so a bad one is skipped, not fatal."""

    revision: Any = None  # shown (check-config, /v1/fleet, /healthz): a string or a number, cut to 200
    customer_name: Any = msgspec.field(default=None, name="customerName")
    zones: dict[str, Any] = msgspec.field(default={}, name=ZONES)
    deep: dict[str, Any] = msgspec.field(default={}, name=DEEP)

    def __post_init__(self) -> None:
        for name, key in (("revision", "revision"), ("customer_name", "customerName")):
            raw = getattr(self, name)
            if raw is not None:
                if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
                    raise invalid(key, "must be a string")
                force_setattr(self, name, str(raw)[:200])
        if not self.zones:
            raise invalid(ZONES, "must be an object with at least one zone")


def _coordinate(raw: Any, name: str, limit: float) -> float:
    if isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            raise invalid(name, f"must be a number or a numeric string, not {raw!r:.40}") from None
    elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
        value = float(raw)
    else:
        raise invalid(name, "must be a number or a numeric string")
    if not math.isfinite(value) or not -limit <= value <= limit:
        raise invalid(name, f"must be within -{limit:g}..{limit:g}, not {raw!r:.40}")
    return value


def is_czf(mapping: Mapping[str, Any]) -> bool:
    return ZONES in mapping or DEEP in mapping


class _Report:
    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.warnings: list[str] = []
        self.skipped: list[str] = []

    def skip(self, exc: ConfigError, fate: str) -> None:
        self.skipped.append(f"{exc} — skipped; {fate}")


def read_czf(mapping: Mapping[str, Any], previous_zones: Mapping[SiteId, SiteSpec] | None = None,
             previous_pins: Mapping[str, DeepPin] | None = None, strict: bool = False) -> CzfRead:
    if ZONES not in mapping:
        raise ConfigError(f"{DEEP}: a deep coverage zone file alone is not supported: its caches must be "
                          f"appliances of coverage zones in the same document (merge them: "
                          f"jq -s '.[0] * .[1]' czf.json dczf.json)")
    doc = convert(Document, mapping, noun="object")
    report = _Report(strict)
    zones = _zones(doc.zones, previous_zones or {}, report)
    owner = {a.id: site.id for site in zones.values() for a in site.appliances}
    pins, pinned = _pins(doc.deep, zones, owner, previous_pins or {}, report)
    return CzfRead(tuple(_assign(zones, pinned, report)), zones, pins, doc.revision, doc.customer_name,
                   tuple(report.warnings), tuple(report.skipped))


# ---- coverage zones ---------------------------------------------------------------------------

def _zones(raw: Mapping[str, Any], previous: Mapping[SiteId, SiteSpec], report: _Report) -> dict[SiteId, SiteSpec]:
    """Good zones in document order; a bad one is skipped, or replaced by its previous version."""
    found: dict[SiteId, SiteSpec | None] = {}
    owner: dict[ApplianceId, SiteId] = {}
    failed: list[tuple[SiteId, ConfigError]] = []
    for name, body in raw.items():
        site = SiteId(name)
        try:
            spec, warnings = _zone(name, body)
            _claim(spec, owner, f"{ZONES}.{name}")
        except ConfigError as exc:
            if report.strict:
                raise
            found[site] = None
            failed.append((site, exc))
            continue
        found[site] = spec
        report.warnings += warnings
    for site, exc in failed:
        old = previous.get(site)
        if old is None:
            report.skip(exc, "not served (no earlier good version)")
            continue
        try:
            _claim(old, owner, f"{ZONES}.{site}")
        except ConfigError as clash:
            report.skip(exc, f"its last good version cannot stay either ({clash})")
            continue
        found[site] = old
        report.skip(exc, "its last good version stays in service")
    zones = {site: spec for site, spec in found.items() if spec is not None}
    if not zones:
        raise ConfigError(f"{ZONES}: no usable zone ({len(failed)} bad; first: {failed[0][1] if failed else 'none'})")
    return zones


def _zone(name: str, raw: Any) -> tuple[SiteSpec, list[str]]:
    key = f"{ZONES}.{name}"
    if not ID.fullmatch(name):
        raise ConfigError(f"{key}: zone name must be 1-64 of [A-Za-z0-9_.-]")
    zone = convert(Zone, raw, where=key, noun="object")
    site = SiteId(name)
    warnings: list[str] = []
    spec = SiteSpec(
        id=site, latitude=zone.coordinates.latitude, longitude=zone.coordinates.longitude,
        appliances=tuple(a.spec(site) for a in zone.appliances),
        prefixes=(*networks(zone.network, f"{key}.network", 4, warnings),
                  *networks(zone.network6, f"{key}.network6", 6, warnings)),
    )
    return spec, warnings


def _claim(site: SiteSpec, owner: dict[ApplianceId, SiteId], key: str) -> None:
    """Record the zone's appliances; an appliance already in another zone makes this zone bad."""
    for a in site.appliances:
        if a.id in owner and owner[a.id] != site.id:
            raise ConfigError(f"{key}.appliances: appliance {a.id!r} also listed in site {owner[a.id]!r}")
    for a in site.appliances:
        owner[a.id] = site.id


def networks(values: Iterable[str], key: str, version: int, warnings: list[str]) -> tuple[str, ...]:
    """Normalised networks of the list at `key`, host bits masked (one warning each), duplicates within
    the list dropped."""
    out: dict[str, None] = {}
    for i, given in enumerate(values):
        try:
            iface = ipaddress.ip_interface(given.strip())  # one parse: the address as given and its network
        except ValueError as exc:
            raise ConfigError(f"{key}[{i}]: {exc}") from None
        net = iface.network
        if net.version != version:
            raise ConfigError(f"{key}[{i}]: {given} is not an IPv{version} network")
        if iface.ip != net.network_address:
            warnings.append(f"{key}[{i}]: {given} has host bits set; read as {net} (fix it at the source)")
        out[str(net)] = None
    return tuple(out)


# ---- deep coverage zones ----------------------------------------------------------------------

Pinned = list[tuple[DeepPin, tuple[SiteId, ...]]]


def _pins(raw: Mapping[str, Any], zones: Mapping[SiteId, SiteSpec], owner: Mapping[ApplianceId, SiteId],
          previous: Mapping[str, DeepPin], report: _Report) -> tuple[dict[str, DeepPin], Pinned]:
    """Deep zones that fit (pinned to whole sites), each with its sites; the others skipped or kept."""
    pins: dict[str, DeepPin] = {}
    pinned: Pinned = []
    for name, body in raw.items():
        key = f"{DEEP}.{name}"
        warnings: list[str] = []
        try:
            pin = _pin(name, body, warnings)
            sites = _pinned_sites(pin, key, zones, owner)
        except ConfigError as exc:
            if report.strict:
                raise
            kept = _kept_pin(previous.get(name), key, zones, owner)
            if kept is None:
                report.skip(exc, "not served (no earlier version that still fits)")
                continue
            (pin, sites), warnings = kept, []
            report.skip(exc, "its last good version stays in service")
        report.warnings += warnings
        pins[name] = pin
        pinned.append((pin, sites))
    return pins, pinned


def _kept_pin(old: DeepPin | None, key: str, zones: Mapping[SiteId, SiteSpec],
              owner: Mapping[ApplianceId, SiteId]) -> tuple[DeepPin, tuple[SiteId, ...]] | None:
    """A bad deep zone's previous version, if it still fits the new coverage zones."""
    if old is None:
        return None
    try:
        return old, _pinned_sites(old, key, zones, owner)
    except ConfigError:
        return None


def _pin(name: str, raw: Any, warnings: list[str]) -> DeepPin:
    key = f"{DEEP}.{name}"
    zone = convert(DeepZone, raw, where=key, noun="object")
    nets = (*networks(zone.network, f"{key}.network", 4, warnings),
            *networks(zone.network6, f"{key}.network6", 6, warnings))
    return DeepPin(name, nets, tuple(ApplianceId(c) for c in dict.fromkeys(zone.caches)))


def _pinned_sites(pin: DeepPin, key: str, zones: Mapping[SiteId, SiteSpec],
                  owner: Mapping[ApplianceId, SiteId]) -> tuple[SiteId, ...]:
    for i, cache in enumerate(pin.caches):
        if cache not in owner:
            raise ConfigError(f"{key}.caches[{i}]: {cache!r} is not an appliance of any coverage zone")
    sites = tuple(dict.fromkeys(owner[c] for c in pin.caches))
    named = set(pin.caches)
    for site in sites:
        missing = sorted(a.id for a in zones[site].appliances if a.id not in named)
        if missing:
            raise ConfigError(
                f"{key}.caches: names some appliances of zone {site!r} but not {', '.join(missing)}: not supported — "
                f"steering pins networks to whole sites; list every appliance of {site!r}, or give the deep "
                f"caches a coverage zone of their own (coordinates and appliances; networks may be empty)")
    return sites


# ---- networks to sites ------------------------------------------------------------------------

def _assign(zones: Mapping[SiteId, SiteSpec], pinned: Iterable[tuple[DeepPin, tuple[SiteId, ...]]],
            report: _Report) -> list[SiteSpec]:
    """Each site with the networks it ends up owning (deep pins override identical networks)."""
    owners: dict[str, list[SiteId]] = {}
    for site in zones.values():
        for net in site.prefixes:
            owners.setdefault(net, []).append(site.id)
    deep: dict[str, list[SiteId]] = {}
    deep_names: dict[str, list[str]] = {}
    for pin, sites in pinned:
        for net in pin.networks:
            deep.setdefault(net, [])
            deep[net] += [s for s in sites if s not in deep[net]]
            deep_names.setdefault(net, []).append(pin.name)
    for net, sites in deep.items():
        if net in owners and owners[net] != sites:
            report.warnings.append(f"{net}: in {ZONES} {_names(owners[net])} and {DEEP} {_names(deep_names[net])}: "
                                   f"the deep zone's sites take it (Traffic Router tries deep caches first)")
        owners[net] = sites
    mine: dict[SiteId, list[str]] = {site: [] for site in zones}
    for net, sites in owners.items():
        if len(sites) > 1:
            report.warnings.append(f"{net}: listed in {len(sites)} zones ({_names(sites)}): each client prefix in it "
                                   f"goes to one of them by capacity-weighted rendezvous, the others next")
        for site in sites:
            mine[site].append(net)
    return [SiteSpec(s.id, s.latitude, s.longitude, s.appliances, tuple(mine[s.id])) for s in zones.values()]


def _names(names: list[str] | list[SiteId]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (f", … ({len(names) - _SHOW} more)" if len(names) > _SHOW else "")


__all__ = ["CzfRead", "DeepPin", "Coordinates", "Zone", "DeepZone", "Document", "is_czf", "read_czf", "networks"]
