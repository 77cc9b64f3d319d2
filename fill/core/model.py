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
    # A title released within [today - post_release_days, today + pre_release_days] counts at least the
    # predicted popularity (cold start: it is in place the night before it launches): `learn_factor` × the
    # mean popularity the region gave the files of its launches of the last `learn_days` days, so the
    # prediction scales with the region's traffic (an absolute count is too much for a small region and
    # too little for a big one); `predicted_popularity` until there are launches to learn from, or always
    # with learn_days = 0. After the launch the demand signal (every request, misses too) measures the
    # title itself, so post_release_days = 0; with the served signal only it must stay > 0.
    # loadtests/offload_sim.py --tune chose these on its tuning traces (the old pre 2 / post 2 / a fixed
    # 1000 lost up to 15% there).
    predicted_popularity: float = 1000.0
    learn_days: int = 7
    learn_factor: float = 2.0  # a decayed count 1-3 days after a launch is about half a steady title's
    pre_release_days: int = 1  # the night before; the hourly fill runs in the window catch a failed one
    # Before its release date a launch counts this share of the prediction: until the next window it is
    # asked for only from its release (midnight), a small part of the day the plan is for, so it takes
    # room left by today's demand rather than displacing it; on the date itself, the whole prediction.
    pre_release_weight: float = 0.1
    post_release_days: int = 0
    capacity_fraction: float = 0.95  # of each tier's bytes the planner may use; the rest is pull-through's
    # Of that, a further share left unplanned for pull-through: the appliance fills the unplanned room on
    # miss (from a peer or the origin, admitted by steering.core.admission's PullPolicy) and evicts only there, never a manifest
    # file. 0: the 5% outside capacity_fraction is room enough (--tune: 0.1 and more lose).
    reactive_share: float = 0.0
    include_cold: bool = True  # place files nobody watched lately too, as capacity allows (the long tail)
    # Fill escalation (fill.core.plan): own cluster's holders, its leader filling the file, then (tier fill)
    # holders in other clusters and the fleet's root leader, then the origin. Tier fill spends the
    # operator's backbone instead of the origin's egress, so it is on; off, every cluster's leader goes
    # to the origin.
    remote_peers: bool = True
    hop_limit: int = 2  # appliances a fill may pass through from a complete copy (1: nobody waits for a peer)
    escalate_after_s: float = 900.0  # a peer still filling the file is waited for this long, then the next source
    origin: OriginRef = field(default_factory=OriginRef)

    def __post_init__(self) -> None:
        if not 0.0 < self.capacity_fraction <= 1.0:
            raise ValueError("capacity_fraction: must be in (0, 1]")
        if not 0.0 <= self.reactive_share < 1.0:
            raise ValueError("reactive_share: must be in [0, 1)")
        if not 0.0 <= self.pre_release_weight <= 1.0:
            raise ValueError("pre_release_weight: must be in [0, 1]")
        if not 1 <= self.hop_limit <= 8:
            raise ValueError("hop_limit: must be 1..8")
        if not 0 < self.escalate_after_s <= 86400:
            raise ValueError("escalate_after_s: must be in (0, 86400]")
        if self.learn_days < 0 or self.learn_factor <= 0:
            raise ValueError("learn_days: must be >= 0, learn_factor: > 0")
