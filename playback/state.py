"""Playback's state behind the handlers: config, the catalog (with a short TTL cache; reads run in a
thread), the steering client, popularity and metrics. `adopt` swaps in a reloaded config (SIGHUP).

Metrics (prometheus-client): one registry for the service, `PlaybackMetrics.registry`; the server's
TaskSupervisor registers its task series there too. Counters the handlers bump are prometheus
Counters; what other objects already count (steering calls, accepted events) is read at scrape time
by a collector, so those paths stay plain integer adds."""
from __future__ import annotations

import asyncio
import time
from typing import Any, Iterator

import aiohttp
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from contracts.catalog import CatalogError, TitleEntry
from origin.backends import open_backend
from origin.catalog import Catalog
from playback.config import PlaybackConfig, s3_config
from playback.core.clientip import parse_networks
from playback.core.events import Popularity
from playback.core.plays import PlaySites
from playback.steerclient import SteeringClient


def open_catalog(config: PlaybackConfig) -> Catalog:
    """The origin's catalog (blocking: an S3 client is built; reloads call it in a thread)."""
    return Catalog(open_backend(config.origin, s3_config()))


class PlaybackMetrics:
    """Playback's series in the service's registry."""

    def __init__(self, state: "State") -> None:
        self.registry = CollectorRegistry()
        self.plays = Counter("playback_plays", "Plays started (a manifest answered with steered URLs).",
                             registry=self.registry)
        self.urls_refused = Counter("playback_steering_urls_refused", "Plays where steering returned a URL "
                                    "playback refused to put in a manifest.", registry=self.registry)
        self.errors = Counter("playback_errors", "Requests refused, by reason.", ["reason"], registry=self.registry)
        self.registry.register(_StateCollector(state))

    def text(self) -> str:
        return generate_latest(self.registry).decode()


class _StateCollector:
    """Reads the steering client's and popularity's plain counters, draining and uptime, at scrape time."""

    def __init__(self, state: "State") -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        s = self.state
        yield CounterMetricFamily("playback_steering_calls", "Calls to steering (each tries every replica).",
                                  value=s.steering.calls)
        yield CounterMetricFamily("playback_steering_failures", "Calls for which no steering replica answered.",
                                  value=s.steering.failures)
        yield CounterMetricFamily("playback_events_accepted", "Viewing events accepted.", value=s.popularity.accepted)
        yield GaugeMetricFamily("playback_draining", "1 while draining after SIGTERM.", value=int(s.draining))
        yield GaugeMetricFamily("playback_uptime_seconds", "Seconds since this process started.",
                                value=round(time.time() - s.started_at, 3))


class State:
    def __init__(self, config: PlaybackConfig) -> None:
        self.config = config
        self.catalog = open_catalog(config)
        self.trusted = parse_networks(config.trusted_proxies)
        self.steering = SteeringClient(config.steering_urls, config.steering_timeout_s, config.fleet_cache_s,
                                       config.steering_token)
        self.popularity = Popularity(config.popularity_half_life_s)
        self.play_sites = PlaySites()  # (client, title) -> the client's site for the play's events
        self.draining = False
        self.started_at = time.time()
        self._entries: dict[str, tuple[float, TitleEntry | None]] = {}
        self.metrics = PlaybackMetrics(self)

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
        except CatalogError:  # a malformed id or entry: not a title we can play
            entry = None
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[title_id] = (now, entry)
        return entry

    def cached_entry(self, title_id: str) -> TitleEntry | None:
        hit = self._entries.get(title_id)
        return hit[1] if hit else None

    async def titles(self, query: str | None, genre: str | None) -> list[TitleEntry]:
        """The catalog's matches, less what is withdrawn (steering's list: playback.steerclient)."""
        found = await asyncio.to_thread(self.catalog.search, query, genre)
        withdrawn = await self.steering.withdrawals()
        return [e for e in found if withdrawn.find(e.title_id, e.version) is None] if withdrawn else found

    async def poster(self, key: str) -> bytes:
        return await asyncio.to_thread(self.catalog.backend.get_bytes, key)

    def health(self) -> dict[str, Any]:
        return {"status": "draining" if self.draining else "ok", "origin": str(self.config.origin),
                "steering": self.config.steering_urls}
