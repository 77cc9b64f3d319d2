"""The planner's service layer: near-pure functions over plain data (no I/O; `now` is a parameter)
that `fill plan` (fill.job) calls between gathering its inputs and writing the manifests.

    check = checked_catalog(entries)                   # a bad entry is skipped and named (check.skipped)
    view = fleetstate.view_of(states, regions)         # steering's /v1/fleet/state, merged (fill.fleetstate)
    demand = demand_popularity(contracts.demand.merge(reports, now), {f.key: f.size for f in check.files})
    manifests = build_manifests(view, check.files, fleetstate.reports_of(states), now, policy, demand)

Plans are deterministic: the same inputs give byte-identical manifests with the same version.
`view_from_state`, `popularity_of` and `manifest_reply` take steering's in-memory objects, as the
planner did when it ran inside every steering replica; tests and stand-ins still use them.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, AbstractSet, Iterable, Mapping

from contracts.ids import ApplianceId, FileKey, SiteId, validate_file_key
from contracts.manifest import CONTENT_TYPE, Manifest, encode_manifest, make_manifest
from fill.core.model import ApplianceView, CatalogFile, ClusterView, FleetView, PlanPolicy
from fill.core.plan import plan
from fill.core.popularity import Reports


def catalog_files(entries: Iterable[Any], include_assets: bool = False) -> list[CatalogFile]:
    """Catalog entries (contracts.catalog.TitleEntry, or CatalogFile already) as fill's files: every
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


@dataclass(frozen=True)
class Skipped:
    title_id: str
    reason: str


@dataclass(frozen=True)
class CatalogCheck:
    files: tuple[CatalogFile, ...]
    titles: int  # entries taken
    skipped: tuple[Skipped, ...]  # entries left out, each with why


_HEX128 = re.compile(r"[0-9a-f]{32}")


def checked_catalog(entries: Iterable[Any]) -> CatalogCheck:
    """The catalog's renditions as fill's files, one entry at a time: an entry whose fill-relevant
    fields do not hold (release date, key, size, hash), or that names a key another entry already
    names with other content, is skipped and reported; the rest is planned (one bad entry must not
    stop every later plan: Traffic Control's lesson)."""
    files: list[CatalogFile] = []
    seen: dict[FileKey, tuple[int, str, str]] = {}
    skipped: list[Skipped] = []
    titles = 0
    for e in entries:
        title_id = str(getattr(getattr(e, "meta", None), "title_id", None) or getattr(e, "title_id", "?"))
        try:
            mine = _entry_files(e)
            for f in mine:
                other = seen.get(f.key)
                if other is not None and other[:2] != (f.size, f.xxh3):
                    raise ValueError(f"{f.key}: also in title {other[2]!r} with another size or hash")
        except (ValueError, TypeError, AttributeError) as exc:
            skipped.append(Skipped(title_id, str(exc)[:300]))
            continue
        titles += 1
        for f in mine:
            if f.key not in seen:
                seen[f.key] = (f.size, f.xxh3, title_id)
                files.append(f)
    return CatalogCheck(tuple(files), titles, tuple(skipped))


def _entry_files(e: Any) -> list[CatalogFile]:
    if isinstance(e, CatalogFile):
        return [e]
    out = catalog_files([e])
    for f in out:
        validate_file_key(f.key)  # InvalidFileKey is a ValueError
        if isinstance(f.size, bool) or not isinstance(f.size, int) or f.size < 0:
            raise ValueError(f"{f.key}: size {f.size!r} is not a byte count")
        if not isinstance(f.xxh3, str) or not _HEX128.fullmatch(f.xxh3):
            raise ValueError(f"{f.key}: xxh3 {str(f.xxh3)[:40]!r} is not 32 lowercase hex digits")
    return out


def by_region(counts: Mapping[str, Mapping[FileKey, tuple[float, float]]],
              regions: Mapping[str, str]) -> dict[str, dict[FileKey, tuple[float, float]]]:
    """Demand as replicas report it — keyed by the client's site (steering's localisation; playback
    remembers it per play) — summed into the planner's content regions (`regions`: site -> region;
    a site not named is its own region)."""
    out: dict[str, dict[FileKey, tuple[float, float]]] = {}
    for site, files in counts.items():
        acc = out.setdefault(regions.get(site, site), {})
        for key, (r, b) in files.items():
            r0, b0 = acc.get(key, (0.0, 0.0))
            acc[key] = (r0 + r, b0 + b)
    return out


def demand_popularity(counts: Mapping[str, Mapping[FileKey, tuple[float, float]]],
                      sizes: Mapping[FileKey, int]) -> dict[str, dict[FileKey, float]]:
    """Summed demand (contracts.demand: region -> file -> (requests, bytes)) in the planner's unit,
    plays: bytes asked for ÷ the file's size, or the request count where a replica could not say how
    many bytes (steering sees a play asked for, not the bytes it will fetch). Files outside the
    catalog are left out."""
    out: dict[str, dict[FileKey, float]] = {}
    for region, files in counts.items():
        acc: dict[FileKey, float] = {}
        for key, (requests, nbytes) in files.items():
            size = sizes.get(key)
            if size is None:
                continue
            value = nbytes / size if nbytes > 0 and size > 0 else requests
            if value > 0:
                acc[key] = value
        if acc:
            out[region] = acc
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
