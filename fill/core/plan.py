"""The whole plan: popularity per region, placement per cluster, sources per file, manifest entries per
appliance. Pure: `plan` takes the fleet view, the catalog files, the heartbeats' popularity and today's
date, and returns each appliance's manifest files in priority order.

Sources, in the order an agent tries them — fill escalation, peer → tier → origin:
1. appliances of its own cluster that hold the file now (from the inventory: complete and verified; in
   rendezvous order, so different files spread over different peers);
2. if none does, the cluster's *leader* for the file — the first appliance the plan gives it to — which
   is filling it this window: a `wait_s` source (a 404 there means "not yet"; asked again until
   `escalate_after_s` after the first 404, then the next source). So a site fetches a file from outside
   once, not once per copy;
3. with `remote_peers`, holders in other clusters (tier fill), then the *root* leader — the leader, of
   all the clusters that lack the file everywhere, first in rendezvous order for the key — again as a
   `wait_s` source: a file nobody holds leaves the origin once for the fleet;
4. the origin.
A pending source is listed only within `hop_limit`: the root leader is 1 hop from the origin (or a
holder), whoever fetches from it 2, and so on; a chain longer than the limit would leave a copy waiting
on a wait, so it goes on to the next source instead.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import AbstractSet, Mapping, Sequence

from msgspec.structs import replace

from contracts.ids import ApplianceId, FileKey
from contracts.manifest import ManifestFile, Source
from fill.core.model import ApplianceView, CatalogFile, ClusterView, FleetView, OriginRef, PlanPolicy
from fill.core.placement import ClusterPlan, place_cluster, rendezvous_order
from fill.core.popularity import Reports, region_popularity, with_predictions

_NOBODY: frozenset[ApplianceId] = frozenset()


@dataclass(frozen=True)
class Plan:
    files: Mapping[ApplianceId, tuple[ManifestFile, ...]]  # only appliances whose capacity is known
    clusters: Mapping[str, ClusterPlan]  # by site
    popularity: Mapping[str, Mapping[FileKey, float]]  # by region, predictions included


def origin_source(key: str, origin: OriginRef) -> Source:
    if origin.url is not None:
        return Source("origin", url=f"{origin.url.rstrip('/')}/{key}")
    if origin.s3_bucket is not None:
        prefix = origin.s3_prefix.strip("/")
        return Source("origin", s3=f"s3://{origin.s3_bucket}/{prefix + '/' if prefix else ''}{key}")
    return Source("origin")


def peer_source(key: str, peer: ApplianceView) -> Source:
    return Source("peer", url=f"{peer.base_url.rstrip('/')}/{key}", appliance=peer.id)


@dataclass(frozen=True, slots=True)
class Pending:
    """A copy being filled this window that others may wait for, and its hops from a complete copy."""

    appliance: ApplianceView
    hops: int


def pending_source(key: str, pending: Pending, policy: PlanPolicy) -> Source:
    return replace(peer_source(key, pending.appliance), wait_s=policy.escalate_after_s)


def sources_for(key: FileKey, me: ApplianceId, cluster: ClusterView, others: Sequence[ApplianceView],
                holders: AbstractSet[ApplianceId], policy: PlanPolicy,
                leader: Pending | None = None, root: Pending | None = None) -> tuple[Source, ...]:
    """Local holders (rendezvous order); else the cluster's leader (pending, within the hop limit);
    then, if allowed, remote holders and the root leader (pending); then the origin."""
    local = [a for a in rendezvous_order(key, cluster.appliances) if a.id != me and a.id in holders]
    out = [peer_source(key, a) for a in local]
    waits = [p for p in (leader, root) if p is not None and p.appliance.id != me and p.hops < policy.hop_limit]
    if not local and leader in waits:
        out.append(pending_source(key, leader, policy))  # type: ignore[arg-type]
    if policy.remote_peers:
        out += [peer_source(key, a) for a in rendezvous_order(key, others) if a.id in holders]
        if root in waits and root != leader:
            out.append(pending_source(key, root, policy))  # type: ignore[arg-type]
    out.append(origin_source(key, policy.origin))
    return tuple(out)


def fill_tree(key: FileKey, lacking: Mapping[str, Sequence[ApplianceView]], held_anywhere: bool,
              policy: PlanPolicy) -> tuple[dict[str, Pending], Pending | None]:
    """Each cluster's leader for `key` and its hops, and the fleet's root leader. `lacking`: the planned
    copies, in placement order, of each cluster none of whose appliances holds the file now."""
    leaders = {site: apps[0] for site, apps in lacking.items() if apps}
    root = None
    if policy.remote_peers and not held_anywhere and leaders:
        root = Pending(rendezvous_order(key, list(leaders.values()))[0], 1)
    out = {}
    for site, a in leaders.items():
        waits_for_root = root is not None and a.id != root.appliance.id and root.hops < policy.hop_limit
        out[site] = Pending(a, root.hops + 1 if waits_for_root else 1)  # type: ignore[union-attr]
    return out, root


def plan(fleet: FleetView, files: Sequence[CatalogFile], reports: Reports, today: dt.date,
         policy: PlanPolicy = PlanPolicy(), demand: Mapping[str, Mapping[FileKey, float]] | None = None) -> Plan:
    """`demand` (optional): popularity per region as steering saw it asked for, misses included, in the
    same unit (plays = bytes ÷ size); a file counts max(served, demand). Without it a file no appliance
    of the region holds cannot become popular there (loadtests/offload_sim.py: the "served" column)."""
    catalog = {f.key: f for f in files}
    region_of = {a.id: c.region for c in fleet.clusters for a in c.appliances}
    observed = region_popularity(reports, region_of, {k: f.size for k, f in catalog.items()})
    for region, heats in (demand or {}).items():
        acc = observed.setdefault(region, {})
        for key, value in heats.items():
            if key in catalog and value > acc.get(key, 0.0):
                acc[key] = value
    regions = {c.region for c in fleet.clusters}
    popularity = {r: with_predictions(observed.get(r, {}), files, today, policy) for r in sorted(regions)}
    out: dict[ApplianceId, list[ManifestFile]] = {}
    cluster_plans: dict[str, ClusterPlan] = {}
    for cluster in fleet.clusters:
        cluster_plans[cluster.site] = place_cluster(cluster.appliances, files, popularity[cluster.region], policy)
        for a in cluster.appliances:
            if a.known:
                out.setdefault(a.id, [])
    trees = _fill_trees(fleet, cluster_plans, policy)
    for cluster in fleet.clusters:
        others = [a for c in fleet.clusters if c.site != cluster.site for a in c.appliances]
        for p in cluster_plans[cluster.site].placed:
            f = catalog[p.key]
            leaders, root = trees.get(p.key, ({}, None))
            srcs = sources_for(p.key, p.appliance, cluster, others, fleet.holders.get(p.key, _NOBODY), policy,
                               leaders.get(cluster.site), root)
            out[p.appliance].append(ManifestFile(f.key, f.size, f.xxh3, p.tier, 0, srcs))
    # Priority: the file's position in its appliance's list, which is hottest first.
    ranked = {a: tuple(ManifestFile(m.key, m.size, m.xxh3, m.tier, i, m.sources) for i, m in enumerate(ms))
              for a, ms in out.items()}
    return Plan(ranked, cluster_plans, popularity)


def _fill_trees(fleet: FleetView, cluster_plans: Mapping[str, ClusterPlan],
                policy: PlanPolicy) -> dict[FileKey, tuple[dict[str, Pending], Pending | None]]:
    """fill_tree for every planned key."""
    views = {a.id: a for c in fleet.clusters for a in c.appliances}
    members = {c.site: {a.id for a in c.appliances} for c in fleet.clusters}
    lacking: dict[FileKey, dict[str, list[ApplianceView]]] = {}
    for site, cp in cluster_plans.items():
        for p in cp.placed:
            if members[site].isdisjoint(fleet.holders.get(p.key, _NOBODY)):
                lacking.setdefault(p.key, {}).setdefault(site, []).append(views[p.appliance])
    return {key: fill_tree(key, sites, bool(fleet.holders.get(key)), policy) for key, sites in lacking.items()}
