"""The fleet as steering replicas report it (`GET /v1/fleet/state`, written by steering.fleetstate),
decoded, merged over replicas, and turned into the planner's FleetView. Pure: bytes in, values out.

Every appliance reports to every replica, so replicas mostly agree; where they differ (one restarted,
one missed a few reports) the planner takes, per appliance, the report and inventory of the replica
that heard from it last (the smallest `age_s`), and the fleet file's placement from that replica too.
An appliance no replica has a report for has unknown capacity: it gets no new plan (fill.job keeps
its last manifest in force).

Decoding checks every field and raises FleetStateError naming it; a replica whose document does not
decode is reported and left out, like one that does not answer. The document is msgspec Structs in its
own shape (`_State`), decoded and checked in one pass (contracts.wirejson; the file keys of inventories,
~10^7, in bulk by `__post_init__`), then flattened into ApplianceStates.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Iterable, Mapping

import msgspec
from msgspec import Meta

from contracts import wirejson
from contracts.ids import ApplianceId, FileKey, SiteId
from contracts.structconf import invalid
from contracts.wirejson import Amount, Count, Ident, Pair, matching
from fill.core.model import ApplianceView, ClusterView, FleetView
from fill.core.popularity import Reports

SCHEMA_VERSION = 1
MAX_APPLIANCES = 100_000
MAX_KEYS = 10_000_000  # over all appliances


class FleetStateError(ValueError):
    reason = "fleet-state-invalid"


class Disk(msgspec.Struct, frozen=True):
    tier: str
    state: str
    total_bytes: Count


@dataclass(frozen=True)
class ApplianceState:
    id: ApplianceId
    site: SiteId
    base_url: str
    capacity_bps: float
    status: str  # the replica's view: up | down | unknown
    age_s: float | None  # seconds since its last report reached the replica; None: never
    disks: tuple[Disk, ...] = ()
    popularity: Mapping[FileKey, tuple[float, float]] = field(default_factory=dict)
    files: frozenset[FileKey] = frozenset()

    @property
    def reported(self) -> bool:
        return self.age_s is not None

    def tier_bytes(self) -> tuple[int, int] | None:
        """(ssd, hdd) bytes of its healthy disks; None without a report (capacity unknown)."""
        if not self.reported:
            return None
        ssd = sum(d.total_bytes for d in self.disks if d.state == "ok" and d.tier == "ssd")
        hdd = sum(d.total_bytes for d in self.disks if d.state == "ok" and d.tier == "hdd")
        return ssd, hdd


# ---- the wire document: steering.fleetstate writes it -------------------------------------------

BaseUrl = matching("https?://.*", "must be an http(s) URL")


class _Report(msgspec.Struct, frozen=True):
    age_s: Amount
    disks: tuple[Disk, ...]
    popularity: dict[FileKey, Pair] = {}

    def __post_init__(self) -> None:
        bad = wirejson.bad_key(self.popularity)
        if bad:
            raise invalid("popularity", bad[1])


class _Inventory(msgspec.Struct, frozen=True):
    files: tuple[FileKey, ...]

    def __post_init__(self) -> None:
        bad = wirejson.bad_key(self.files)
        if bad:
            raise invalid(f"files[{bad[0]}]", bad[1])


class _Appliance(msgspec.Struct, frozen=True):
    id: Ident
    site: Ident
    base_url: BaseUrl
    capacity_bps: Amount
    status: str
    report: _Report | None = None
    inventory: _Inventory | None = None

    def state(self) -> ApplianceState:
        r, inv = self.report, self.inventory
        return ApplianceState(ApplianceId(self.id), SiteId(self.site), self.base_url, self.capacity_bps,
                              self.status, r.age_s if r else None, r.disks if r else (),
                              r.popularity if r else {}, frozenset(inv.files) if inv else frozenset())


class _State(msgspec.Struct, frozen=True, tag_field="v", tag=SCHEMA_VERSION):
    appliances: Annotated[tuple[_Appliance, ...], Meta(max_length=MAX_APPLIANCES)]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        keys = 0
        for i, a in enumerate(self.appliances):
            if a.id in seen:
                raise invalid(f"appliances[{i}].id", f"{a.id!r} listed twice")
            seen.add(a.id)
            keys += (len(a.inventory.files) if a.inventory else 0) + (len(a.report.popularity) if a.report else 0)
            if keys > MAX_KEYS:
                raise invalid("appliances", f"more than {MAX_KEYS} keys in all")


_DECODER = wirejson.decoder(_State)


def decode(raw: bytes | str) -> list[ApplianceState]:
    state = wirejson.decode(_DECODER, raw, FleetStateError, first=_version)
    return [a.state() for a in state.appliances]


def _version(data: Any) -> None:
    version = data.get("v") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise FleetStateError(f"v: schema version {version!r} not supported (want {SCHEMA_VERSION})")


def merge(replicas: Iterable[list[ApplianceState]]) -> list[ApplianceState]:
    """One state per appliance over every replica that answered: the freshest report wins (an
    appliance reported nowhere keeps the first replica's entry). Sorted by site, then id."""
    best: dict[ApplianceId, ApplianceState] = {}
    for states in replicas:
        for a in states:
            held = best.get(a.id)
            if held is None or (a.age_s is not None and (held.age_s is None or a.age_s < held.age_s)):
                best[a.id] = a
    return sorted(best.values(), key=lambda a: (a.site, a.id))


def view_of(states: Iterable[ApplianceState], regions: Mapping[str, str] | None = None) -> FleetView:
    """The planner's FleetView: a cluster per site (in site order), its content region from
    `regions` (default: the site's own id); holders from every appliance's inventory."""
    clusters: dict[SiteId, list[ApplianceView]] = {}
    holders: dict[FileKey, set[ApplianceId]] = {}
    for a in states:
        tiers = a.tier_bytes()
        ssd, hdd = tiers if tiers is not None else (None, None)
        clusters.setdefault(a.site, []).append(ApplianceView(a.id, a.base_url, ssd, hdd, a.capacity_bps))
        for key in a.files:
            holders.setdefault(key, set()).add(a.id)
    view = tuple(ClusterView(site, (regions or {}).get(site, site), tuple(apps))
                 for site, apps in sorted(clusters.items()))
    return FleetView(view, {k: frozenset(v) for k, v in holders.items()})


def reports_of(states: Iterable[ApplianceState]) -> Reports:
    """The heartbeats' popularity counters (served bytes) per appliance, as the planner takes them."""
    return {a.id: a.popularity for a in states if a.reported}


__all__ = ["ApplianceState", "Disk", "FleetStateError", "decode", "merge", "view_of", "reports_of"]
