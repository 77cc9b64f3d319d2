"""Client networks the appliances heard over BGP (pure), kept from the `routes` of their heartbeats.

Updates follow the inventory's rules (steering.core.inventory.judge): a full table replaces what an
appliance held, a delta applies from the generation held, anything else is a gap answered with
`routes_need_full` while the held table keeps serving.

Lookup is BGP's decision for a client address: the longest prefix any live appliance heard (dead
appliances' sessions are gone, whatever they last said), then among the appliances that heard it, the
shortest AS path, then the lowest MED (absent counts as 0, RFC 4271 9.1.2.2). What is left is a tie
for the existing ranking (health, load, content). Tables are as steering.core.prefixes.PrefixTable:
one dict per prefix length keyed by the network's int, probed longest first, so a lookup costs a
probe per distinct length whatever the number of routes. Each prefix keeps its hearers in tiers of
equal (AS path length, MED), so a decision reads the first tier with a live appliance.

Appliances of one site should hear the same announcements; `compare` finds those that do not, from an
order-free digest of each appliance's table kept as routes come and go.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
from typing import AbstractSet, Iterable, Mapping, NamedTuple

from contracts.heartbeat import Route, RoutesUpdate
from contracts.ids import ApplianceId
from contracts.netprefix import WIDTH, parse_prefix
from steering.core.inventory import InventoryResult, Verdict, judge
from steering.core.prefixes import ClientAddress


class Heard:
    """One prefix and the appliances that heard it, in tiers of equally good routes, best first."""

    __slots__ = ("prefix", "length", "routes", "tiers")

    def __init__(self, prefix: str, length: int) -> None:
        self.prefix = prefix
        self.length = length
        self.routes: dict[ApplianceId, Route] = {}
        self.tiers: tuple[tuple[ApplianceId, ...], ...] = ()

    def rerank(self) -> None:
        ranked = sorted((len(r.as_path), r.med or 0, a) for a, r in self.routes.items())
        self.tiers = tuple(tuple(a for *_, a in group) for _, group in groupby(ranked, key=lambda t: t[:2]))

    def best(self, live: AbstractSet[ApplianceId]) -> tuple[ApplianceId, ...]:
        """The live appliances with the best route (shortest AS path, then lowest MED)."""
        for tier in self.tiers:
            if live.issuperset(tier):  # the usual case: the whole tier is up (no tuple built)
                return tier
            alive = tuple(a for a in tier if a in live)
            if alive:
                return alive
        return ()


class Match(NamedTuple):
    heard: Heard
    appliances: tuple[ApplianceId, ...]  # the best live hearers


class RouteIndex:
    def __init__(self) -> None:
        self._held: dict[ApplianceId, dict[str, Route]] = {}
        self._generation: dict[ApplianceId, int] = {}
        self._digest: dict[ApplianceId, int] = {}
        self._tables: dict[int, dict[int, dict[int, Heard]]] = {4: {}, 6: {}}
        self._probes: dict[int, list[tuple[int, dict[int, Heard]]]] = {4: [], 6: []}
        self.prefixes = 0  # distinct prefixes heard

    # ---- updates ------------------------------------------------------------------------------
    def apply(self, appliance: ApplianceId, update: RoutesUpdate) -> InventoryResult:
        verdict = judge(self._generation.get(appliance), update)  # type: ignore[arg-type]
        if verdict is Verdict.GAP:
            return InventoryResult(verdict, self._generation.get(appliance), need_full=True)
        if verdict is Verdict.REPLACE:
            self._replace(appliance, update.announced)
        else:
            for prefix in update.withdrawn:
                self._remove(appliance, prefix)
            for route in update.announced:
                self._add(appliance, route)
        self._generation[appliance] = update.generation
        return InventoryResult(verdict, update.generation, need_full=False)

    def drop(self, appliance: ApplianceId) -> None:
        for prefix in list(self._held.get(appliance, ())):
            self._remove(appliance, prefix)
        self._held.pop(appliance, None)
        self._generation.pop(appliance, None)
        self._digest.pop(appliance, None)

    def _replace(self, appliance: ApplianceId, routes: Iterable[Route]) -> None:
        fresh = {r.prefix: r for r in routes}
        for prefix in [p for p in self._held.get(appliance, ()) if p not in fresh]:
            self._remove(appliance, prefix)
        for route in fresh.values():
            self._add(appliance, route)

    def _add(self, appliance: ApplianceId, route: Route) -> None:
        held = self._held.setdefault(appliance, {})
        old = held.get(route.prefix)
        if old == route:
            return
        if old is not None:
            self._remove(appliance, route.prefix)
        held[route.prefix] = route
        self._digest[appliance] = self._digest.get(appliance, 0) ^ _fingerprint(route)
        heard = self._slot(route.prefix, create=True)
        assert heard is not None
        heard.routes[appliance] = route
        heard.rerank()

    def _remove(self, appliance: ApplianceId, prefix: str) -> None:
        route = self._held.get(appliance, {}).pop(prefix, None)
        if route is None:
            return
        self._digest[appliance] ^= _fingerprint(route)
        heard = self._slot(prefix, create=False)
        if heard is not None:
            heard.routes.pop(appliance, None)
            if heard.routes:
                heard.rerank()
            else:
                self._unslot(prefix)

    def _slot(self, prefix: str, create: bool) -> Heard | None:
        net = parse_prefix(prefix)
        tables = self._tables[net.version]
        by_length = tables.get(net.length)
        if by_length is None:
            if not create:
                return None
            by_length = tables[net.length] = {}
            self._reprobe(net.version)
        key = net.value >> (WIDTH[net.version] - net.length)
        heard = by_length.get(key)
        if heard is None and create:
            heard = by_length[key] = Heard(prefix, net.length)
            self.prefixes += 1
        return heard

    def _unslot(self, prefix: str) -> None:
        net = parse_prefix(prefix)
        tables = self._tables[net.version]
        by_length = tables[net.length]
        del by_length[net.value >> (WIDTH[net.version] - net.length)]
        self.prefixes -= 1
        if not by_length:
            del tables[net.length]
            self._reprobe(net.version)

    def _reprobe(self, version: int) -> None:
        width = WIDTH[version]
        self._probes[version] = [(width - length, table)
                                 for length, table in sorted(self._tables[version].items(), reverse=True)]

    # ---- reading ------------------------------------------------------------------------------
    def __bool__(self) -> bool:
        return self.prefixes > 0

    def lookup(self, addr: ClientAddress, live: AbstractSet[ApplianceId]) -> Match | None:
        """The longest prefix holding `addr` that a live appliance heard, and its best live hearers."""
        value = addr.value
        for shift, table in self._probes[addr.version]:
            heard = table.get(value >> shift)
            if heard is not None:
                best = heard.best(live)
                if best:
                    return Match(heard, best)  # (a NamedTuple: cheap on the decision path)
        return None

    def generation(self, appliance: ApplianceId) -> int | None:
        return self._generation.get(appliance)

    def count(self, appliance: ApplianceId) -> int:
        return len(self._held.get(appliance, ()))

    def routes_of(self, appliance: ApplianceId) -> Mapping[str, Route]:
        return self._held.get(appliance, {})

    def total(self) -> int:
        return sum(len(h) for h in self._held.values())

    def compare(self, appliances: Iterable[ApplianceId], examples: int = 5) -> "Comparison":
        """Whether these appliances (one site's, those reporting routes) heard the same routes; if
        not, which differ from the most common table and a few prefixes that are not heard alike."""
        groups: dict[int, list[ApplianceId]] = {}
        for a in appliances:
            if a in self._generation:
                groups.setdefault(self._digest.get(a, 0), []).append(a)
        if len(groups) <= 1:
            return Comparison(True, (), ())
        majority = max(groups.values(), key=len)
        differing = tuple(sorted(a for g in groups.values() if g is not majority for a in g))
        reference = self._held.get(majority[0], {})
        diff: list[str] = []
        for a in differing:
            mine = self._held.get(a, {})
            for prefix in sorted(set(mine).symmetric_difference(reference)
                                 | {p for p, r in mine.items() if p in reference and reference[p] != r}):
                if prefix not in diff:
                    diff.append(prefix)
                if len(diff) >= examples:
                    break
        return Comparison(False, differing, tuple(diff[:examples]))


@dataclass(frozen=True)
class Comparison:
    consistent: bool
    differing: tuple[ApplianceId, ...]  # appliances whose table differs from the site's most common one
    examples: tuple[str, ...]  # prefixes not heard alike (some)


def _fingerprint(route: Route) -> int:
    return hash((route.prefix, route.as_path, route.med))


__all__ = ["Heard", "Match", "RouteIndex", "Comparison"]
