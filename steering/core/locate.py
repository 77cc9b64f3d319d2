"""Where is the client? The longest prefix holding its address, over the fleet file's static prefixes
and the routes the appliances heard over BGP (steering.core.routes); else its GeoIP point (nearest
sites by great-circle distance); else the configured default site. The answer is a whole site order:
the first site is the client's, the rest are fallbacks nearest it first.

A BGP route counts when it is strictly longer than the static match: on equal length the fleet file
wins, so an operator can override what a router says, and a site without BGP keeps its static
prefixes. Among the appliances that heard the longest route, the best AS path and MED pick the sites.

When several sites are equally the client's (a prefix announced to two sites, or a GeoIP point —
often a country centroid — about as near to several), one is chosen by weighted rendezvous on the
client's /24 (or /48) with site capacity as weight: one client always gets the same site, while a
country's many prefixes spread across the sites in proportion to what they can carry.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import AbstractSet, Any, Callable, Hashable

from contracts.ids import ApplianceId, SiteId
from steering.core.fleet import Fleet, SiteOrder
from steering.core.geo import GeoPoint, by_distance, equally_near
from steering.core.hashing import int_key, score
from steering.core.prefixes import ClientAddress, client_key
from steering.core.routes import RouteIndex

MAX_MEMO = 65536  # memoised geo orders; cleared when full (cheap to rebuild, bounded memory)


class LocateMethod(str, Enum):
    PREFIX = "prefix"
    BGP = "bgp"
    GEO = "geo"
    DEFAULT = "default"


@dataclass(frozen=True, slots=True)
class Localisation:
    method: LocateMethod
    order: SiteOrder


class Localiser:
    def __init__(self, fleet: Fleet, default_site: SiteId, geo_slack_km: float = 50.0,
                 v4_bits: int = 24, v6_bits: int = 48, routes: RouteIndex | None = None,
                 live: AbstractSet[ApplianceId] = frozenset()) -> None:
        if default_site not in fleet.sites:
            raise ValueError(f"default site {default_site!r} is not in the fleet")
        self.fleet = fleet
        self.default_site = default_site
        self.geo_slack_km = geo_slack_km
        self._bits = (v4_bits, v6_bits)
        self.routes = routes if routes is not None else RouteIndex()  # learned over BGP (updated in place)
        self.live = live  # appliances up now (updated in place): only their routes count
        self._single: dict[tuple[SiteId, LocateMethod], Localisation] = {}
        self._sites: dict[tuple[ApplianceId, ...], tuple[SiteId, ...]] = {}  # best hearers -> their sites
        self._orders: dict[Hashable, SiteOrder] = {}
        self._distances: dict[tuple[float, float, float], list[tuple[float, SiteId]]] = {}

    def by_prefix(self, addr: ClientAddress) -> Localisation | None:
        if self.routes:
            learned = self.routes.lookup(addr, self.live)
            if learned is not None:
                static = self.fleet.prefixes.lookup_length(addr)
                if static is None or learned.heard.length > static[0]:
                    return self._located(self._sites_of(learned.appliances), addr, LocateMethod.BGP)
        owners = self.fleet.prefixes.lookup(addr)
        if owners is None:
            return None
        return self._located(owners, addr, LocateMethod.PREFIX)

    def _located(self, owners: tuple[SiteId, ...], addr: ClientAddress, method: LocateMethod) -> Localisation:
        if len(owners) == 1:
            return self._only(owners[0], method)
        chosen = self._spread(owners, addr)
        order = self._order(chosen, chosen, lambda: self.fleet.order_from(chosen[0]).sites)
        return Localisation(method, order)

    def _sites_of(self, appliances: tuple[ApplianceId, ...]) -> tuple[SiteId, ...]:
        sites = self._sites.get(appliances)
        if sites is None:
            if len(self._sites) >= MAX_MEMO:
                self._sites.clear()
            specs = self.fleet.appliances
            sites = tuple(dict.fromkeys(specs[a].site for a in appliances if a in specs)) or (self.default_site,)
            self._sites[appliances] = sites
        return sites

    def route_of(self, addr: ClientAddress) -> dict[str, Any] | None:
        """The route `by_prefix` follows for this client, for an explained decision (None: no prefix)."""
        learned = self.routes.lookup(addr, self.live) if self.routes else None
        static = self.fleet.prefixes.lookup_with_prefix(addr)
        static_len = int(static[0].rsplit("/", 1)[1]) if static is not None else -1
        if learned is not None and learned.heard.length > static_len:
            heard = learned.heard
            best = heard.routes[learned.appliances[0]]
            return {"source": "bgp", "prefix": heard.prefix, "as_path": list(best.as_path), "med": best.med,
                    "local_pref": best.local_pref, "communities": list(best.communities),
                    "heard_by": list(learned.appliances),
                    "also_heard_by": sorted(a for a in heard.routes if a not in learned.appliances)}
        if static is not None:
            return {"source": "static", "prefix": static[0], "sites": list(static[1])}
        return None

    def by_point(self, addr: ClientAddress, point: GeoPoint) -> Localisation:
        point_key = (round(point.latitude, 3), round(point.longitude, 3), point.accuracy_km)
        ordered = self._by_distance(point_key)
        near = equally_near(ordered, max(self.geo_slack_km, point.accuracy_km))
        chosen = self._spread(near, addr) if len(near) > 1 else near
        order = self._order((point_key, chosen), chosen, lambda: tuple(s for _, s in ordered))
        return Localisation(LocateMethod.GEO, order)

    def by_default(self) -> Localisation:
        return self._only(self.default_site, LocateMethod.DEFAULT)

    def _only(self, site: SiteId, method: LocateMethod) -> Localisation:
        loc = self._single.get((site, method))
        if loc is None:
            loc = self._single[(site, method)] = Localisation(method, self.fleet.order_from(site))
        return loc

    def _spread(self, sites: tuple[SiteId, ...], addr: ClientAddress) -> tuple[SiteId, ...]:
        """Equally good sites, best first for this client by capacity-weighted rendezvous."""
        key = int_key(client_key(addr, *self._bits))
        fleet = self.fleet
        return tuple(sorted(
            sites, key=lambda s: -score(key, fleet.site_seeds[s], fleet.sites[s].capacity_bps or 1)))

    def _order(self, memo_key: Hashable, head: tuple[SiteId, ...],
               all_sites: Callable[[], tuple[SiteId, ...]]) -> SiteOrder:
        """`head`, then the other sites in the order `all_sites()` gives; memoised by `memo_key`."""
        order = self._orders.get(memo_key)
        if order is None:
            if len(self._orders) >= MAX_MEMO:
                self._orders.clear()
            rest = tuple(s for s in all_sites() if s not in head)
            order = self._orders[memo_key] = SiteOrder.of(head + rest)
        return order

    def _by_distance(self, key: tuple[float, float, float]) -> list[tuple[float, SiteId]]:
        ordered = self._distances.get(key)
        if ordered is None:
            if len(self._distances) >= MAX_MEMO:
                self._distances.clear()
            ordered = self._distances[key] = by_distance(
                key[0], key[1], ((s.id, s.latitude, s.longitude) for s in self.fleet.sites.values()))
        return ordered

