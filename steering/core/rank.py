"""Which appliances, in order, for this client and this file.

Preference, best first: healthy appliances that hold the file, nearest site first (the client's own
site, then the others nearest it); then, content-blind, healthy appliances by site order — a stale
inventory or a brand-new file still gets an answer, and an appliance that lacks the file answers a
fast 404 that moves the player on. Within a site, weighted rendezvous on the file key (capacity as
weight) orders appliances, so a file concentrates on the same few appliances of a site and fill's
placement is followed, without any appliance being every file's first choice. The answer spans at
least two appliances and, when the fleet has another healthy site, two sites.

Every decision carries why: how the client was located and the outcome (hit, content miss — the
client's site is up but lacks the file —, health miss — its site holds the file or could serve but
is down or overloaded —, not held anywhere, or nothing healthy at all).

With `pull` (steering.core.admission decided the client's site should pull this file), the site's
rendezvous-first live appliance that reports pull-through comes first, the holders after it: it
fetches the file from its parent while the player's request waits, and the next plays are hits.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import AbstractSet, Mapping, NamedTuple

from contracts.ids import ApplianceId, FileKey, SiteId
from steering.core.fleet import ApplianceSpec, Candidate, Fleet, SiteOrder
from steering.core.hashing import rendezvous_best, rendezvous_sort
from steering.core.locate import LocateMethod, Localisation

_EMPTY: frozenset[ApplianceId] = frozenset()


class Outcome(str, Enum):
    HIT = "hit"
    CONTENT_MISS = "content-miss"
    HEALTH_MISS = "health-miss"
    NOT_HELD = "not-held"
    PULL = "pull"  # a content miss sent to the client's own site, which pulls the file in
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class RankPolicy:
    max_locations: int = 3
    min_sites: int = 2
    sort_holders_below: int = 48  # fewer holders: rank them all (finds a far copy); else scan sites
    scan_sites: int = 4  # sites scanned for holders of a widely held file


@dataclass(frozen=True, slots=True)
class LiveView:
    """The live state a decision reads; the shell updates the underlying set and mapping in place."""

    up: AbstractSet[ApplianceId]
    holders: Mapping[FileKey, AbstractSet[ApplianceId]]
    pullers: AbstractSet[ApplianceId] = frozenset()  # appliances that report pull-through on


class Decision(NamedTuple):
    """The verdict. A NamedTuple, not a frozen dataclass: as immutable, and 4x cheaper to make on a
    path that runs 50k times a second."""

    candidates: tuple[Candidate, ...]
    method: LocateMethod
    outcome: Outcome
    site: SiteId  # the client's site: first in its order


DEFAULT_POLICY = RankPolicy()


def rank(loc: Localisation, fleet: Fleet, live: LiveView, key: FileKey,
         policy: RankPolicy = DEFAULT_POLICY, pull: bool = False) -> Decision:
    holders = live.holders.get(key, _EMPTY)
    take = _Take(policy)
    kb = key.encode()
    nearest = loc.order.sites[0]
    pulling = pull and _offer_puller(take, fleet, live, nearest, kb)
    if not (holders and _offer_holders(take, loc.order, fleet, live.up, holders, kb, policy)):
        _offer_blind(take, loc.order, fleet, live.up, holders, kb)
    outcome = Outcome.PULL if pulling else _outcome(take.picked, nearest, fleet, live.up, holders)
    return Decision(tuple(take.picked), loc.method, outcome, nearest)


def can_pull(fleet: Fleet, live: LiveView, site: SiteId) -> bool:
    """Whether a live appliance of `site` reports pull-through (admission is worth counting)."""
    return any(a.id in live.pullers and a.id in live.up for a in fleet.sites[site].appliances)


def _offer_puller(take: "_Take", fleet: Fleet, live: LiveView, site: SiteId, kb: bytes) -> bool:
    """Offer `site`'s best live pull-through appliance for this file; False if it has none."""
    group = [a for a in fleet.sites[site].appliances if a.id in live.pullers and a.id in live.up]
    if not group:
        return False
    take.offer(fleet.candidates[(rendezvous_best(group, kb).id, False)])
    return True


class _Take:
    """Keeps the first max_locations distinct candidates offered; once full and all in one site, the
    best of another site replaces the last (failover must not share the site's fate)."""

    __slots__ = ("picked", "ids", "sites", "want", "min_sites", "full")

    def __init__(self, policy: RankPolicy) -> None:
        self.picked: list[Candidate] = []
        self.ids: set[ApplianceId] = set()
        self.sites: set[SiteId] = set()
        self.want, self.min_sites, self.full = policy.max_locations, policy.min_sites, False

    def offer(self, cand: Candidate) -> bool:
        """Take or skip `cand`; True once nothing more is wanted."""
        spec = cand.appliance
        if spec.id in self.ids:
            return False
        if not self.full:
            self.picked.append(cand)
            self.ids.add(spec.id)
            self.sites.add(spec.site)
            self.full = len(self.picked) >= self.want
        elif spec.site not in self.sites:
            self.picked[-1] = cand
            self.sites.add(spec.site)
        return self.full and len(self.sites) >= self.min_sites


def _offer_holders(take: _Take, order: SiteOrder, fleet: Fleet, up: AbstractSet[ApplianceId],
                   holders: AbstractSet[ApplianceId], kb: bytes, policy: RankPolicy) -> bool:
    """Live holders, site by site in the client's order; True when done."""
    specs = fleet.appliances
    if len(holders) < policy.sort_holders_below:  # few copies: find them wherever they are
        rank_of = order.rank
        ranked = sorted([(rank_of[specs[a].site], a) for a in holders if a in up and a in specs])
        i, n = 0, len(ranked)
        while i < n:
            end = i + 1
            while end < n and ranked[end][0] == ranked[i][0]:
                end += 1
            if end - i == 1:  # the usual case: one copy per site
                if take.offer(fleet.candidates[(ranked[i][1], True)]):
                    return True
            elif _offer_site(take, [specs[a] for _, a in ranked[i:end]], kb, fleet, holders):
                return True
            i = end
        return False
    for site_id in order.sites[:policy.scan_sites]:  # many copies: the nearest sites have some
        here = [specs[a] for a in fleet.members[site_id].intersection(holders) if a in up]
        if here and _offer_site(take, here, kb, fleet, holders):
            return True
    return False


def _offer_blind(take: _Take, order: SiteOrder, fleet: Fleet, up: AbstractSet[ApplianceId],
                 holders: AbstractSet[ApplianceId], kb: bytes) -> None:
    """Content-blind: live appliances by site order and rendezvous (a stale inventory still works)."""
    sites = fleet.sites
    for site_id in order.sites:
        if take.full and site_id in take.sites:
            continue  # only another site is still wanted
        here = [a for a in sites[site_id].appliances if a.id in up]
        if here and _offer_site(take, here, kb, fleet, holders):
            return


def _offer_site(take: _Take, group: list[ApplianceSpec], kb: bytes, fleet: Fleet,
                holders: AbstractSet[ApplianceId]) -> bool:
    """Offer one site's appliances, best first for this file; True when done. When only another
    site is still wanted, one of an already taken site is useless and only this site's best counts."""
    if len(group) > 1:
        if take.full:
            if group[0].site in take.sites:
                return False
            group = [rendezvous_best(group, kb)]
        else:
            group = rendezvous_sort(group, kb)
    cands = fleet.candidates
    for spec in group:
        if take.offer(cands[(spec.id, spec.id in holders)]):
            return True
    return False


def _outcome(picked: list[Candidate], nearest: SiteId, fleet: Fleet, up: AbstractSet[ApplianceId],
             holders: AbstractSet[ApplianceId]) -> Outcome:
    if not picked:
        return Outcome.UNAVAILABLE
    first = picked[0]
    if first.holds and first.appliance.site == nearest:
        return Outcome.HIT
    local = fleet.members[nearest]
    if not local.isdisjoint(holders) or local.isdisjoint(up):
        return Outcome.HEALTH_MISS
    if any(c.holds for c in picked):
        return Outcome.CONTENT_MISS
    return Outcome.NOT_HELD
