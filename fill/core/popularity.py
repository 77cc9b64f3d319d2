"""Popularity as Open Connect defines it: bytes served ÷ file size, i.e. how many times over a file was
streamed lately. Appliances report decayed bytes served per file in their heartbeats; the planner sums
them over every appliance of a content region and divides by the size. Titles about to launch get a
predicted popularity — learned from what the region's recent launches reached — so they are in place
before anyone asks for them."""
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


def predicted_popularity(observed: Mapping[FileKey, float], files: Iterable[CatalogFile], today: dt.date,
                         policy: PlanPolicy) -> float:
    """What a launch is expected to reach in this region: `learn_factor` × the mean observed popularity
    of the files of titles released 1..`learn_days` days ago (the factor: a decayed count a day or
    three after launch is about half the steady count of a title as busy); the configured
    `predicted_popularity` when learning is off or there is nothing to learn from (no recent launches,
    or no demand seen for any of them)."""
    if policy.learn_days <= 0:
        return policy.predicted_popularity
    recent = [observed.get(f.key, 0.0) for f in files
              if f.release_date is not None and 1 <= (today - f.release_date).days <= policy.learn_days]
    if not recent or sum(recent) <= 0:  # none lately, or no demand seen for them (a new region, no feed)
        return policy.predicted_popularity
    return policy.learn_factor * sum(recent) / len(recent)


def with_predictions(observed: Mapping[FileKey, float], files: Iterable[CatalogFile], today: dt.date,
                     policy: PlanPolicy) -> dict[FileKey, float]:
    """Observed popularity, raised to the predicted one for files of titles launching around today
    (`pre_release_weight` of it before the release date)."""
    files = list(files)
    out = dict(observed)
    launching = [f for f in files if is_launching(f.release_date, today, policy)]
    if launching:
        predicted = predicted_popularity(observed, files, today, policy)
        early = predicted * policy.pre_release_weight
        for f in launching:
            value = early if f.release_date is not None and f.release_date > today else predicted
            out[f.key] = max(out.get(f.key, 0.0), value)
    return out


def copies_for(popularity: float, policy: PlanPolicy, cluster_size: int) -> int:
    """How many appliances of a cluster hold a file: more for hotter files, never more than exist."""
    n = policy.min_copies + sum(1 for t in policy.copy_thresholds if popularity >= t)
    return max(0, min(n, cluster_size))
