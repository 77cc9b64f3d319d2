"""The whole plan: popularity per region, placement per cluster, sources per file, manifest entries per
appliance. Pure: `plan` takes the fleet view, the catalog files, the heartbeats' popularity and today's
date, and returns each appliance's manifest files in priority order.

Sources, in the order an agent tries them: appliances of its own cluster that hold the file now (from
the inventory; in rendezvous order, so different files spread over different peers), then, with
`remote_peers`, holders in other clusters (tier fill), then the origin.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import AbstractSet, Mapping, Sequence

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


def sources_for(key: FileKey, me: ApplianceId, cluster: ClusterView, others: Sequence[ApplianceView],
                holders: AbstractSet[ApplianceId], policy: PlanPolicy) -> tuple[Source, ...]:
    """Local holders (rendezvous order), then remote holders if allowed, then the origin."""
    local = [a for a in rendezvous_order(key, cluster.appliances) if a.id != me and a.id in holders]
    out = [peer_source(key, a) for a in local]
    if policy.remote_peers:
        out += [peer_source(key, a) for a in rendezvous_order(key, others) if a.id in holders]
    out.append(origin_source(key, policy.origin))
    return tuple(out)


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
        cp = place_cluster(cluster.appliances, files, popularity[cluster.region], policy)
        cluster_plans[cluster.site] = cp
        others = [a for c in fleet.clusters if c.site != cluster.site for a in c.appliances]
        for a in cluster.appliances:
            if a.known:
                out.setdefault(a.id, [])
        for p in cp.placed:
            f = catalog[p.key]
            srcs = sources_for(p.key, p.appliance, cluster, others, fleet.holders.get(p.key, _NOBODY), policy)
            out[p.appliance].append(ManifestFile(f.key, f.size, f.xxh3, p.tier, 0, srcs))
    # Priority: the file's position in its appliance's list, which is hottest first.
    ranked = {a: tuple(ManifestFile(m.key, m.size, m.xxh3, m.tier, i, m.sources) for i, m in enumerate(ms))
              for a, ms in out.items()}
    return Plan(ranked, cluster_plans, popularity)
