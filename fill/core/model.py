"""The planner's inputs, as plain frozen values: the fleet as fill sees it, catalog files, the policy.

Steering owns the live state (fleet file, heartbeats, inventory); `fill.service.build_manifests` takes
this view of it, so the planner never imports steering and steering adapts its state in one place.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import AbstractSet, Mapping

from contracts.ids import ApplianceId, FileKey, SiteId


@dataclass(frozen=True, slots=True)
class ApplianceView:
    id: ApplianceId
    base_url: str  # what peers fetch from: "<base_url>/<key>"
    ssd_bytes: int | None  # total bytes of its healthy SSD disks; None: not known yet (no report)
    hdd_bytes: int | None
    weight: float = 1.0  # rendezvous weight; steering's ranking uses capacity_bps, so pass that

    @property
    def known(self) -> bool:
        return self.ssd_bytes is not None and self.hdd_bytes is not None


@dataclass(frozen=True, slots=True)
class ClusterView:
    site: SiteId  # a site's appliances form one cluster: they fill from each other
    region: str  # content region (the countries it serves): clusters of a region share popularity
    appliances: tuple[ApplianceView, ...]


@dataclass(frozen=True)
class FleetView:
    clusters: tuple[ClusterView, ...]
    # The inventory: which appliances hold each file now (steering's InventoryIndex.view()).
    holders: Mapping[FileKey, AbstractSet[ApplianceId]] = field(default_factory=dict)

    def appliances(self) -> dict[ApplianceId, tuple[ClusterView, ApplianceView]]:
        return {a.id: (c, a) for c in self.clusters for a in c.appliances}


@dataclass(frozen=True, slots=True)
class CatalogFile:
    key: FileKey
    size: int
    xxh3: str
    title_id: str = ""
    release_date: dt.date | None = None


@dataclass(frozen=True)
class OriginRef:
    """How manifests name the origin: an HTTP origin's base URL, an S3 bucket (and key prefix), or
    neither (each agent uses its own configured origin)."""

    url: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str = ""


@dataclass(frozen=True)
class PlanPolicy:
    # copies = min_copies + how many thresholds the popularity reaches, at most the cluster's size.
    copy_thresholds: tuple[float, ...] = (50.0, 500.0, 5000.0)
    min_copies: int = 1
    # A title released within [today - post_release_days, today + pre_release_days] counts at least
    # `predicted_popularity` (cold start: it is local before it launches, and stays until reports catch up).
    predicted_popularity: float = 1000.0
    pre_release_days: int = 2  # 1 = the night before; 2 survives one failed night (offload_sim: costs ~1%)
    post_release_days: int = 2
    capacity_fraction: float = 0.95  # of each tier's bytes the planner fills (room for pull-through, slack)
    include_cold: bool = True  # place files nobody watched lately too, as capacity allows (the long tail)
    remote_peers: bool = False  # after local peers, holders in other clusters (tier fill) before the origin
    origin: OriginRef = field(default_factory=OriginRef)
