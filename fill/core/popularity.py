"""Popularity as Open Connect defines it: bytes served ÷ file size, i.e. how many times over a file was
streamed lately. Appliances report decayed bytes served per file in their heartbeats; the planner sums
them over every appliance of a content region and divides by the size. Titles about to launch (or just
launched) get a configured predicted popularity so they are in place before anyone asks for them."""
from __future__ import annotations

import datetime as dt
from typing import Iterable, Mapping

from contracts.ids import ApplianceId, FileKey
from fill.core.model import CatalogFile, PlanPolicy

Reports = Mapping[ApplianceId, Mapping[FileKey, tuple[float, float]]]  # heartbeat: (requests, bytes)


def region_popularity(reports: Reports, region_of: Mapping[ApplianceId, str],
                      sizes: Mapping[FileKey, int]) -> dict[str, dict[FileKey, float]]:
    """Per region, per catalog file: decayed bytes served by the region's appliances ÷ size. Reports of
    appliances outside the fleet and of files outside the catalog are ignored."""
    out: dict[str, dict[FileKey, float]] = {}
    for appliance, files in reports.items():
        region = region_of.get(appliance)
        if region is None:
            continue
        acc = out.setdefault(region, {})
        for key, (_, nbytes) in files.items():
            size = sizes.get(key)
            if size is None or size <= 0 or nbytes <= 0:
                continue
            acc[key] = acc.get(key, 0.0) + nbytes / size
    return out


def is_launching(release: dt.date | None, today: dt.date, policy: PlanPolicy) -> bool:
    if release is None:
        return False
    days = (release - today).days
    return -policy.post_release_days <= days <= policy.pre_release_days


def with_predictions(observed: Mapping[FileKey, float], files: Iterable[CatalogFile], today: dt.date,
                     policy: PlanPolicy) -> dict[FileKey, float]:
    """Observed popularity, raised to the predicted one for files of titles launching around today."""
    out = dict(observed)
    for f in files:
        if is_launching(f.release_date, today, policy):
            out[f.key] = max(out.get(f.key, 0.0), policy.predicted_popularity)
    return out


def copies_for(popularity: float, policy: PlanPolicy, cluster_size: int) -> int:
    """How many appliances of a cluster hold a file: more for hotter files, never more than exist."""
    n = policy.min_copies + sum(1 for t in policy.copy_thresholds if popularity >= t)
    return max(0, min(n, cluster_size))
