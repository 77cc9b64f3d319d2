"""Readers for the entries both fleet shapes share (steering.fleetconf's TOML sites, steering.czf's
coverage zones): an appliance (id, base URL, capacity) and an id in the heartbeat's grammar. Each
raises a ConfigError naming the dotted key."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from contracts.ids import ApplianceId, SiteId
from contracts.tomlconf import ConfigError, Section
from steering.core.fleet import ApplianceSpec

ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")  # the heartbeat's id grammar
GBPS = 1_000_000_000


def appliance(a: Section, site: SiteId) -> ApplianceSpec:
    spec = ApplianceSpec(
        id=ApplianceId(ident(a, "id")),
        site=site,
        base_url=base_url(a, "base_url"),
        capacity_bps=int(a.float("capacity_gbps", min=0.001, max=100_000) * GBPS),
    )
    a.done()
    return spec


def ident(s: Section, name: str) -> str:
    value = s.str(name)
    if not ID.fullmatch(value):
        raise ConfigError(f"{s.key(name)}: must be 1-64 of [A-Za-z0-9_.-], starting with a letter or digit")
    return value


def base_url(s: Section, name: str) -> str:
    value = s.str(name)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"{s.key(name)}: must be an http(s) URL without query, e.g. https://oca-1.example.net")
    return value.rstrip("/")


__all__ = ["ID", "GBPS", "appliance", "ident", "base_url"]
