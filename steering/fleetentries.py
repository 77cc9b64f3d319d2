"""The entry both fleet shapes share (steering.fleetconf's TOML sites, steering.czf's coverage zones):
an appliance (id, base URL, capacity), a Struct checked by contracts.structconf, whose errors name the
dotted key; and the heartbeat's id grammar, which site and zone names follow too."""
from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from msgspec import Meta
from msgspec.structs import force_setattr

from contracts.ids import ApplianceId, SiteId
from contracts.structconf import Conf, invalid
from steering.core.fleet import ApplianceSpec

ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")  # the heartbeat's id grammar
Ident = Annotated[str, Meta(pattern=f"^{ID.pattern}\\Z",
                            extra={"says": "must be 1-64 of [A-Za-z0-9_.-], starting with a letter or digit"})]
GBPS = 1_000_000_000


class ApplianceEntry(Conf):
    """One appliance of a site (`[[sites.appliances]]`) or of a coverage zone (`"appliances": [...]`)."""

    id: Ident
    base_url: str  # kept without its trailing slash
    capacity_gbps: Annotated[float, Meta(ge=0.001, le=100_000)]

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise invalid("base_url", "must be an http(s) URL without query, e.g. https://oca-1.example.net")
        force_setattr(self, "base_url", self.base_url.rstrip("/"))

    def spec(self, site: SiteId) -> ApplianceSpec:
        return ApplianceSpec(id=ApplianceId(self.id), site=site, base_url=self.base_url,
                             capacity_bps=int(self.capacity_gbps * GBPS))


__all__ = ["ID", "Ident", "GBPS", "ApplianceEntry"]
