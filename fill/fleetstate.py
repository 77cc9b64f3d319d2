"""The fleet as steering replicas report it (`GET /v1/fleet/state`, written by steering.fleetstate),
decoded, merged over replicas, and turned into the planner's FleetView. Pure: bytes in, values out.

Every appliance reports to every replica, so replicas mostly agree; where they differ (one restarted,
one missed a few reports) the planner takes, per appliance, the report and inventory of the replica
that heard from it last (the smallest `age_s`), and the fleet file's placement from that replica too.
An appliance no replica has a report for has unknown capacity: it gets no new plan (fill.job keeps
its last manifest in force).

Decoding checks every field and raises FleetStateError naming it; a replica whose document does not
decode is reported and left out, like one that does not answer.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from contracts.ids import ApplianceId, FileKey, InvalidFileKey, SiteId, validate_file_key
from contracts.wirefields import WireFields, is_number
from fill.core.model import ApplianceView, ClusterView, FleetView
from fill.core.popularity import Reports

SCHEMA_VERSION = 1
MAX_APPLIANCES = 100_000
MAX_KEYS = 10_000_000  # over all appliances


class FleetStateError(ValueError):
    reason = "fleet-state-invalid"


@dataclass(frozen=True)
class Disk:
    tier: str
    state: str
    total_bytes: int


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


class _Fields(WireFields):
    error = FleetStateError
    noun = "object"


def decode(raw: bytes | str) -> list[ApplianceState]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise FleetStateError(f"not valid JSON: {exc}") from None
    top = _Fields(data, "")
    if top.raw("v", None) != SCHEMA_VERSION:
        raise FleetStateError(f"v: schema version {top.raw('v', None)!r} not supported (want {SCHEMA_VERSION})")
    items = top.list("appliances")
    if len(items) > MAX_APPLIANCES:
        raise FleetStateError(f"appliances: more than {MAX_APPLIANCES}")
    out, seen, keys = [], set(), 0
    for i, item in enumerate(items):
        a = _appliance(item, f"appliances[{i}]")
        if a.id in seen:
            raise FleetStateError(f"appliances[{i}].id: {a.id!r} listed twice")
        seen.add(a.id)
        keys += len(a.files) + len(a.popularity)
        if keys > MAX_KEYS:
            raise FleetStateError(f"appliances: more than {MAX_KEYS} keys in all")
        out.append(a)
    return out


def _appliance(raw: Any, where: str) -> ApplianceState:
    f = _Fields(raw, where)
    base_url = f.str("base_url")
    if not base_url.startswith(("http://", "https://")):
        raise FleetStateError(f"{where}.base_url: must be an http(s) URL")
    capacity = f.raw("capacity_bps")
    if not is_number(capacity) or capacity < 0:
        raise FleetStateError(f"{where}.capacity_bps: must be a non-negative number")
    status = f.str("status")
    report, inventory = f.raw("report", None), f.raw("inventory", None)
    age, disks, popularity = None, (), {}
    if report is not None:
        r = _Fields(report, f"{where}.report")
        age = r.number("age_s")
        disks = tuple(_disk(d, f"{where}.report.disks[{j}]") for j, d in enumerate(r.list("disks")))
        popularity = _popularity(r.raw("popularity", {}), f"{where}.report.popularity")
    files: frozenset[FileKey] = frozenset()
    if inventory is not None:
        inv = _Fields(inventory, f"{where}.inventory")
        files = frozenset(_key(k, f"{where}.inventory.files[{j}]") for j, k in enumerate(inv.list("files")))
    return ApplianceState(ApplianceId(f.ident("id")), SiteId(f.ident("site")), base_url, float(capacity), status,
                          age, disks, popularity, files)


def _disk(raw: Any, where: str) -> Disk:
    f = _Fields(raw, where)
    return Disk(f.str("tier"), f.str("state"), f.count("total_bytes"))


def _popularity(raw: Any, where: str) -> dict[FileKey, tuple[float, float]]:
    if not isinstance(raw, dict):
        raise FleetStateError(f"{where}: must be an object")
    out = {}
    for key, value in raw.items():
        if not (isinstance(value, list) and len(value) == 2 and all(is_number(v) and v >= 0 for v in value)):
            raise FleetStateError(f"{where}[{str(key)[:80]!r}]: must be [requests, bytes]")
        out[_key(key, where)] = (float(value[0]), float(value[1]))
    return out


def _key(raw: Any, where: str) -> FileKey:
    if not isinstance(raw, str):
        raise FleetStateError(f"{where}: a file key must be a string")
    try:
        return validate_file_key(raw)
    except InvalidFileKey as exc:
        raise FleetStateError(f"{where}: {exc}") from None


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
