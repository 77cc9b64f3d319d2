"""Great-circle distance and "which sites are nearest" for a located client.

A GeoIP answer can be a city or only a country's centroid (with a large accuracy radius). Sites whose
distance differs from the nearest by less than the answer's uncertainty (or a configured slack) are
equally near: the caller spreads clients among them by capacity instead of piling a whole country
onto whichever site happens to sit closest to the centroid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from contracts.ids import SiteId

EARTH_RADIUS_KM = 6371.0088  # mean radius (IUGG)


@dataclass(frozen=True)
class GeoPoint:
    latitude: float
    longitude: float
    accuracy_km: float = 0.0  # the database's accuracy radius; country centroids have hundreds


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance; accurate to ~0.5% (the Earth is not a sphere), plenty for ranking."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def by_distance(lat: float, lon: float, sites: Iterable[tuple[SiteId, float, float]]) -> list[tuple[float, SiteId]]:
    """Sites nearest first; ties broken by id so the order is deterministic."""
    return sorted((great_circle_km(lat, lon, s_lat, s_lon), site) for site, s_lat, s_lon in sites)


def equally_near(ordered: list[tuple[float, SiteId]], slack_km: float) -> tuple[SiteId, ...]:
    """The sites within `slack_km` of the nearest one's distance (at least the nearest)."""
    if not ordered:
        return ()
    limit = ordered[0][0] + slack_km
    return tuple(site for distance, site in ordered if distance <= limit)
