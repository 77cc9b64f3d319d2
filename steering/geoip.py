"""The GeoIP fallback: a MaxMind GeoIP2/GeoLite2 City database (or any .mmdb with the same
`location` record) read with maxminddb, memory-mapped. Only the shell opens files; the core gets a
GeoPoint. A record without a city is a country (or continent) centroid: its accuracy radius is
widened so the core treats every site near that centroid as equally near and spreads the country."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import maxminddb

from contracts.structconf import ConfigError
from steering.core.geo import GeoPoint

COUNTRY_ACCURACY_KM = 500.0  # assumed for a country centroid that names no radius


class GeoDatabase:
    def __init__(self, path: Path) -> None:
        try:
            self._reader = maxminddb.open_database(str(path), maxminddb.MODE_AUTO)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise ConfigError(f"geo.database: cannot open {path}: {exc}") from None
        self.path = Path(path)
        meta = self._reader.metadata()
        self.description = f"{meta.database_type}, built {meta.build_epoch}, {meta.node_count} nodes"

    def point(self, address: str) -> GeoPoint | None:
        try:
            record: Any = self._reader.get(address)
        except ValueError:
            return None
        if not isinstance(record, dict):
            return None
        location = record.get("location")
        if not isinstance(location, dict):
            return None
        lat, lon = location.get("latitude"), location.get("longitude")
        if not isinstance(lat, (int, float)) or not isinstance(lon, (int, float)):
            return None
        radius = float(location.get("accuracy_radius") or 0.0)
        if "city" not in record:
            radius = max(radius, COUNTRY_ACCURACY_KM)
        return GeoPoint(float(lat), float(lon), radius)

    def close(self) -> None:
        self._reader.close()
