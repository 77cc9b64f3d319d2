"""The configured fleet: sites (coordinates, served prefixes) and their appliances, with what every
decision needs precomputed — the prefix table and, per site, the other sites by distance."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from contracts.ids import ApplianceId, SiteId
from contracts.structconf import ConfigError
from steering.core.geo import by_distance
from steering.core.hashing import seed_of
from steering.core.prefixes import PrefixTable


@dataclass(frozen=True, slots=True)
class ApplianceSpec:
    id: ApplianceId
    site: SiteId
    base_url: str  # scheme://host[:port][/path], no trailing slash
    capacity_bps: int
    seed: int = 0  # rendezvous seed, derived from the id by build_fleet


@dataclass(frozen=True, slots=True)
class Candidate:
    """An appliance offered to a client, and whether (as far as this replica knows) it holds the file.
    The fleet makes the two of each appliance once: a decision allocates none."""

    appliance: ApplianceSpec
    holds: bool


@dataclass(frozen=True)
class SiteSpec:
    id: SiteId
    latitude: float
    longitude: float
    appliances: tuple[ApplianceSpec, ...] = ()
    prefixes: tuple[str, ...] = ()  # the ISP's networks routed to this site (v4 and v6)

    @property
    def capacity_bps(self) -> int:
        return sum(a.capacity_bps for a in self.appliances)


@dataclass(frozen=True)
class SiteOrder:
    """Sites in the order a client should try them, and each site's position in it."""

    sites: tuple[SiteId, ...]
    rank: Mapping[SiteId, int]

    @classmethod
    def of(cls, sites: Iterable[SiteId]) -> "SiteOrder":
        ordered = tuple(sites)
        return cls(ordered, {s: i for i, s in enumerate(ordered)})


@dataclass(frozen=True)
class Fleet:
    sites: Mapping[SiteId, SiteSpec]
    appliances: Mapping[ApplianceId, ApplianceSpec]
    prefixes: PrefixTable[tuple[SiteId, ...]]
    site_seeds: Mapping[SiteId, int]
    members: Mapping[SiteId, frozenset[ApplianceId]]  # each site's appliance ids
    candidates: Mapping[tuple[ApplianceId, bool], Candidate]
    _orders: dict[SiteId, SiteOrder] = field(default_factory=dict, repr=False, compare=False)

    def order_from(self, site: SiteId) -> SiteOrder:
        """`site` first, then every other site nearest it first (memoised: S^2 work only on demand)."""
        order = self._orders.get(site)
        if order is None:
            here = self.sites[site]
            rest = by_distance(here.latitude, here.longitude,
                               ((s.id, s.latitude, s.longitude) for s in self.sites.values() if s.id != site))
            order = self._orders[site] = SiteOrder.of((site, *(s for _, s in rest)))
        return order


def build_fleet(sites: Iterable[SiteSpec]) -> Fleet:
    """Validate cross-references (unique ids) and precompute; raises ConfigError naming the site."""
    by_id: dict[SiteId, SiteSpec] = {}
    appliances: dict[ApplianceId, ApplianceSpec] = {}
    prefix_sites: dict[str, tuple[SiteId, ...]] = {}
    for site in sites:
        if site.id in by_id:
            raise ConfigError(f"sites.{site.id}: site listed twice")
        seeded = tuple(_seeded(a, site.id, appliances) for a in site.appliances)
        by_id[site.id] = SiteSpec(site.id, site.latitude, site.longitude, seeded, site.prefixes)
        for network in site.prefixes:
            held = prefix_sites.get(network, ())
            if site.id not in held:  # one prefix may be announced to several sites
                prefix_sites[network] = (*held, site.id)
    if not by_id:
        raise ConfigError("sites: the fleet needs at least one site")
    table: PrefixTable[tuple[SiteId, ...]] = PrefixTable()
    for network, owners in prefix_sites.items():
        try:
            table.add(network, owners)
        except ValueError as exc:
            raise ConfigError(f"sites.{owners[0]}.prefixes: {exc}") from None
    return Fleet(by_id, appliances, table, {s: seed_of(s) for s in by_id},
                 {s.id: frozenset(a.id for a in s.appliances) for s in by_id.values()},
                 {(a.id, holds): Candidate(a, holds) for a in appliances.values() for holds in (True, False)})


def _seeded(a: ApplianceSpec, site: SiteId, seen: dict[ApplianceId, ApplianceSpec]) -> ApplianceSpec:
    if a.id in seen:
        raise ConfigError(f"sites.{site}.appliances: appliance {a.id!r} also listed in site {seen[a.id].site!r}")
    spec = ApplianceSpec(a.id, site, a.base_url.rstrip("/"), a.capacity_bps, seed_of(a.id))
    seen[a.id] = spec
    return spec
