"""Playback's state behind the handlers: config, the catalog (with a short TTL cache; reads run in a
thread), the steering client, popularity and counters. `adopt` swaps in a reloaded config (SIGHUP);
supervised tasks' counters live in the server's TaskSupervisor registry, not here."""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import aiohttp

from origin.backends import open_backend
from origin.catalog import Catalog
from origin.core.catalog import TitleEntry
from origin.core.errors import CatalogError, UsageError
from playback.config import PlaybackConfig, s3_config
from playback.core.clientip import parse_networks
from playback.core.events import Popularity
from playback.steerclient import SteeringClient


def open_catalog(config: PlaybackConfig) -> Catalog:
    """The origin's catalog (blocking: an S3 client is built; reloads call it in a thread)."""
    return Catalog(open_backend(config.origin, s3_config()))


class State:
    def __init__(self, config: PlaybackConfig) -> None:
        self.config = config
        self.catalog = open_catalog(config)
        self.trusted = parse_networks(config.trusted_proxies)
        self.steering = SteeringClient(config.steering_urls, config.steering_timeout_s, config.fleet_cache_s,
                                       config.steering_token)
        self.popularity = Popularity(config.popularity_half_life_s)
        self.counters: Counter[tuple[str, str]] = Counter()
        self.draining = False
        self.started_at = time.time()
        self._entries: dict[str, tuple[float, TitleEntry | None]] = {}

    def adopt(self, config: PlaybackConfig, catalog: Catalog | None = None) -> None:
        """Swap in a reloaded config; `catalog` is the new origin's, opened already (None: same origin)."""
        if catalog is not None:
            self.catalog = catalog
            self._entries.clear()
        self.trusted = parse_networks(config.trusted_proxies)
        self.steering.urls = list(config.steering_urls)
        self.steering.timeout = aiohttp.ClientTimeout(total=config.steering_timeout_s)
        self.steering.fleet_cache_s = config.fleet_cache_s
        self.steering.token = config.steering_token
        self.popularity.half_life_s = config.popularity_half_life_s
        self.config = config

    async def entry(self, title_id: str) -> TitleEntry | None:
        now = time.monotonic()
        hit = self._entries.get(title_id)
        if hit is not None and now - hit[0] <= self.config.catalog_cache_s:
            return hit[1]
        try:
            entry = await asyncio.to_thread(self.catalog.find, title_id)
        except (UsageError, CatalogError):  # a malformed id or entry: not a title we can play
            entry = None
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[title_id] = (now, entry)
        return entry

    def cached_entry(self, title_id: str) -> TitleEntry | None:
        hit = self._entries.get(title_id)
        return hit[1] if hit else None

    async def titles(self, query: str | None, genre: str | None) -> list[TitleEntry]:
        return await asyncio.to_thread(self.catalog.search, query, genre)

    async def poster(self, key: str) -> bytes:
        return await asyncio.to_thread(self.catalog.backend.get_bytes, key)

    def count(self, name: str, label: str = "") -> None:
        self.counters[(name, label)] += 1

    def metrics_text(self) -> str:
        lines = []
        for (name, label), value in sorted(self.counters.items()):
            lines.append(f"{name}{{{label}}} {value}" if label else f"{name} {value}")
        lines += [f"playback_steering_calls_total {self.steering.calls}",
                  f"playback_steering_failures_total {self.steering.failures}",
                  f"playback_events_accepted_total {self.popularity.accepted}",
                  f"playback_draining {int(self.draining)}",
                  f"playback_uptime_seconds {round(time.time() - self.started_at, 3)}"]
        return "\n".join(lines) + "\n"

    def health(self) -> dict[str, Any]:
        return {"status": "draining" if self.draining else "ok", "origin": str(self.config.origin),
                "steering": self.config.steering_urls}
