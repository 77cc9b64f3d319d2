"""What steering calls to serve `GET /v1/fill-manifest?appliance=ID`: near-pure functions over plain
data (no I/O; `now` is a parameter).

    view = view_from_state(fleet.sites.values(), state.reports, state.inventory.view())
    manifests = build_manifests(view, catalog.list(), popularity_of(state.reports), time.time(), policy)
    reply = manifest_reply(manifests.get(appliance_id), request.headers.get("If-None-Match"))
    -> web.Response(status=reply.status, body=reply.body, headers=reply.headers)

Plans are deterministic: every replica given the same inputs builds byte-identical manifests with the
same version and ETag. A plan over ~10^5 files takes seconds: build it when inputs change (or every few
minutes), keep the dict, answer requests from it.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, AbstractSet, Iterable, Mapping

from contracts.ids import ApplianceId, FileKey, SiteId
from contracts.manifest import CONTENT_TYPE, Manifest, encode_manifest, make_manifest
from fill.core.model import ApplianceView, CatalogFile, ClusterView, FleetView, PlanPolicy
from fill.core.plan import plan
from fill.core.popularity import Reports


def catalog_files(entries: Iterable[Any], include_assets: bool = False) -> list[CatalogFile]:
    """Catalog entries (origin.core.catalog.TitleEntry, or CatalogFile already) as fill's files: every
    rendition (the big media files appliances serve); playlists and posters only with include_assets."""
    out: list[CatalogFile] = []
    for e in entries:
        if isinstance(e, CatalogFile):
            out.append(e)
            continue
        raw = e.meta.release_date
        release = dt.date.fromisoformat(raw) if raw else None
        items = [(r.key, r.size, r.xxh3) for r in e.renditions]
        if include_assets:
            items += [(a.key, a.size, a.xxh3) for a in e.assets]
        out += [CatalogFile(FileKey(k), s, h, e.title_id, release) for k, s, h in items]
    return out


def popularity_of(reports: Mapping[ApplianceId, Any]) -> Reports:
    """Steering's last reports (FleetState.reports: .health.popularity) as the planner's input."""
    return {a: r.health.popularity for a, r in reports.items()}


def view_from_state(sites: Iterable[Any], reports: Mapping[ApplianceId, Any],
                    holders: Mapping[FileKey, AbstractSet[ApplianceId]],
                    regions: Mapping[SiteId, str] | None = None) -> FleetView:
    """Steering's fleet and live state as the planner's FleetView. `sites`: SiteSpec-like (.id,
    .appliances with .id, .base_url, .capacity_bps); `reports`: LastReport-like per appliance
    (.health.disks with .tier, .state, .total_bytes); `regions`: site -> content region (default: each
    site is its own region). Capacity is None for an appliance that has not reported: it gets no plan."""
    clusters = []
    for site in sites:
        apps = []
        for spec in site.appliances:
            ssd = hdd = None
            report = reports.get(spec.id)
            if report is not None:
                ssd = hdd = 0
                for d in report.health.disks:
                    if getattr(d.state, "value", d.state) != "ok":
                        continue
                    if d.tier == "ssd":
                        ssd += d.total_bytes
                    elif d.tier == "hdd":
                        hdd += d.total_bytes
            apps.append(ApplianceView(spec.id, spec.base_url, ssd, hdd, float(spec.capacity_bps)))
        region = (regions or {}).get(site.id, site.id)
        clusters.append(ClusterView(site.id, region, tuple(apps)))
    return FleetView(tuple(clusters), holders)


def build_manifests(fleet_view: FleetView, catalog_entries: Iterable[Any], popularity: Reports, now: float,
                    policy: PlanPolicy = PlanPolicy(),
                    demand: Mapping[str, Mapping[FileKey, float]] | None = None) -> dict[ApplianceId, Manifest]:
    """One manifest per appliance whose capacity is known. `now` is unix seconds: it stamps
    `generated_at` and gives today's (UTC) date for release-date predictions. `demand`: optional
    popularity per region from steering's own view (requests it steered, misses included)."""
    files = catalog_files(catalog_entries)
    today = dt.datetime.fromtimestamp(now, dt.timezone.utc).date()
    result = plan(fleet_view, files, popularity, today, policy, demand)
    return {a: make_manifest(a, fs, now) for a, fs in result.files.items()}


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


def manifest_reply(manifest: Manifest | None, if_none_match: str | None) -> Reply:
    """200 with the manifest and its ETag, 304 when If-None-Match names it, 404 without a plan."""
    if manifest is None:
        return Reply(404, {"Content-Type": "text/plain"}, b"no fill plan for this appliance (yet)\n")
    headers = {"ETag": manifest.etag, "Cache-Control": "no-cache"}
    if if_none_match is not None and _etag_matches(if_none_match, manifest.etag):
        return Reply(304, headers, b"")
    return Reply(200, {**headers, "Content-Type": CONTENT_TYPE}, encode_manifest(manifest))


def _etag_matches(header: str, etag: str) -> bool:
    """RFC 9110 §13.1.2: weak comparison over a list of tags, or *."""
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)
