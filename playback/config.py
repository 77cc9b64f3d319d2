"""Playback's typed config: `load(path)` reads TOML, `parse(mapping)` builds frozen dataclasses and names
the dotted key of any error. See config/playback.example.toml for every setting."""
from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from typing import Any, Mapping

from contracts.callers import Caller, parse_callers
from contracts.demand import MAX_FILES
from contracts.tlsserve import TlsSettings, parse_tls
from contracts.tomlconf import ConfigError, Section, read_toml
from contracts.webguard import GuardConfig, parse_guard
from origin.config import Location, S3Config, parse_location

__all__ = ["ConfigError", "DemandSettings", "PlaybackConfig", "load", "parse"]


@dataclass(frozen=True)
class DemandSettings:
    """[demand]: watched bytes per (region, file) from viewing events, spooled durably (playback.demand)."""
    state_dir: Path | None = None  # the spool (diskcache), this replica's alone; default `playback-demand`
    #                                beside the config; None (no config file): kept in memory only
    region: str = "all"  # the region events count in: playback does not localise clients (see playback.demand)
    source: str = ""  # this replica's name in GET /v1/demand; default "<hostname>-<port>"
    half_life_s: float = 86400.0
    max_entries: int = 1_000_000  # (region, file) pairs kept, the hottest
    compact_interval_s: float = 60.0  # the spool's log is folded into one snapshot this often
    fsync: bool = True  # each accepted batch is synced to disk before the 2xx (power loss too), else
    #                     only written (a crash of the process loses nothing, a crash of the host may)


@dataclass(frozen=True)
class PlaybackConfig:
    origin: Location
    steering_urls: tuple[str, ...]
    steering_token: str = ""  # read from steering_token_file: playback's bearer token at steering
    listen: str = "127.0.0.1"
    port: int = 8090
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For we believe
    steering_timeout_s: float = 2.0
    retry_after_s: int = 5  # Retry-After on 503 when steering is unreachable
    fleet_cache_s: float = 1.0  # steering's /v1/fleet is fetched at most this often
    catalog_cache_s: float = 5.0
    max_pathways: int = 4
    content_steering: bool = True
    # Where players reach this server, for the absolute steering URIs in manifests (dash.js does not
    # resolve a relative ContentSteering URL): e.g. "https://play.example.net"; "" = from each request
    public_url: str = ""
    # CORS for player pages on other origins (the usual case: a service's site embeds the player while
    # the playback API lives elsewhere) on the player-facing routes: titles, playback, events, fleet.
    # ["*"] = any origin; [] = none. Credentials are never allowed: nothing here uses cookies.
    cors_allow_origins: tuple[str, ...] = ("*",)
    steering_ttl_s: int = 10  # TTL of the steering manifest: how often players re-steer
    saturation_fraction: float = 0.9  # egress / capacity at which an appliance is moved last
    token_duration_factor: float = 2.0
    token_slack_s: int = 3600
    token_min_ttl_s: int = 3600
    token_max_ttl_s: int = 2 * 86400  # must not exceed steering's tokens.max_ttl_s
    popularity_half_life_s: float = 86400.0
    max_events_per_request: int = 100
    drain_grace_s: float = 1.0
    drain_timeout_s: float = 10.0
    # abuse shedding (contracts.webguard): connection timeouts and cap, body limits
    guard: GuardConfig = field(default_factory=GuardConfig)
    max_event_body_bytes: int = 64 << 10  # POST /v1/events: 100 events are ~20 KB
    callers_file: Path | None = None  # who may read GET /v1/demand (role "demand"): contracts.callers
    callers: Mapping[str, Caller] = field(default_factory=dict)  # read from callers_file, by token hash
    demand: DemandSettings = field(default_factory=DemandSettings)
    # the fleet page's charts (GET /v1/fleet/charts): queries to this Prometheus, which scrapes the
    # appliances with target labels `appliance` and `site` (playback.core.charts); "" = no charts endpoint
    prometheus_url: str = ""
    prometheus_timeout_s: float = 5.0
    charts_rate_window_s: float = 60.0  # rate() over at least this: 4 scrape intervals or more
    charts_cache_s: float = 2.0  # one answer per range at most this often, however many pages are open
    source: Path | None = None
    tls: TlsSettings | None = None  # [tls]: HTTPS on listen:port (contracts.tlsserve)


def load(path: Path) -> PlaybackConfig:
    path = Path(path).resolve()
    return parse(read_toml(path), base=path.parent, source=path)


def parse(mapping: Mapping[str, Any], base: Path | None = None, source: Path | None = None) -> PlaybackConfig:
    top = Section(mapping)
    s = top.section("playback")
    o = top.section("origin")
    origin = parse_location(o.str("location"), o.str("endpoint_url", None), o.str("region", None), base,
                            where=o.key("location"))
    o.done()
    d = PlaybackConfig(origin=origin, steering_urls=())
    urls = tuple(u.rstrip("/") for u in s.str_list("steering_urls"))
    if not urls or not all(u.startswith(("http://", "https://")) for u in urls):
        raise ConfigError(f"{s.key('steering_urls')}: one or more http(s):// URLs of steering replicas")
    proxies = tuple(s.str_list("trusted_proxies", []))
    for i, p in enumerate(proxies):
        try:
            ipaddress.ip_network(p, strict=False)
        except ValueError:
            raise ConfigError(f"{s.key('trusted_proxies')}[{i}]: {p!r} is not an IP network") from None
    callers_file = s.path("callers_file", None, base=base)
    port = s.int("port", d.port, min=0, max=65535)
    cfg = PlaybackConfig(
        origin=origin, steering_urls=urls, trusted_proxies=proxies,
        steering_token=_token(s.path("steering_token_file", None, base=base), s.key("steering_token_file")),
        listen=s.str("listen", d.listen), port=port,
        steering_timeout_s=s.float("steering_timeout_s", d.steering_timeout_s, min=0.05, max=60),
        retry_after_s=s.int("retry_after_s", d.retry_after_s, min=1, max=3600),
        fleet_cache_s=s.float("fleet_cache_s", d.fleet_cache_s, min=0, max=60),
        catalog_cache_s=s.float("catalog_cache_s", d.catalog_cache_s, min=0, max=3600),
        max_pathways=s.int("max_pathways", d.max_pathways, min=1, max=16),
        content_steering=s.bool("content_steering", d.content_steering),
        public_url=_public_url(s.str("public_url", d.public_url), s.key("public_url")),
        cors_allow_origins=_origins(s.str_list("cors_allow_origins", list(d.cors_allow_origins)),
                                    s.key("cors_allow_origins")),
        steering_ttl_s=s.int("steering_ttl_s", d.steering_ttl_s, min=1, max=86400),
        saturation_fraction=s.float("saturation_fraction", d.saturation_fraction, min=0.1, max=10),
        token_duration_factor=s.float("token_duration_factor", d.token_duration_factor, min=1, max=100),
        token_slack_s=s.int("token_slack_s", d.token_slack_s, min=0),
        token_min_ttl_s=s.int("token_min_ttl_s", d.token_min_ttl_s, min=60),
        token_max_ttl_s=s.int("token_max_ttl_s", d.token_max_ttl_s, min=60),
        popularity_half_life_s=s.float("popularity_half_life_s", d.popularity_half_life_s, min=1),
        max_events_per_request=s.int("max_events_per_request", d.max_events_per_request, min=1, max=10_000),
        drain_grace_s=s.float("drain_grace_s", d.drain_grace_s, min=0),
        drain_timeout_s=s.float("drain_timeout_s", d.drain_timeout_s, min=0),
        guard=parse_guard(s),
        max_event_body_bytes=s.int("max_event_body_bytes", d.max_event_body_bytes, min=1024, max=16 << 20),
        callers_file=callers_file,
        callers=parse_callers(read_toml(callers_file), where=str(callers_file)) if callers_file else {},
        demand=_demand(top.section("demand", {}), base, port),
        prometheus_url=_http_url(s.str("prometheus_url", d.prometheus_url), s.key("prometheus_url")),
        prometheus_timeout_s=s.float("prometheus_timeout_s", d.prometheus_timeout_s, min=0.1, max=60),
        charts_rate_window_s=s.float("charts_rate_window_s", d.charts_rate_window_s, min=1, max=3600),
        charts_cache_s=s.float("charts_cache_s", d.charts_cache_s, min=0, max=60),
        source=source,
        tls=parse_tls(top, base),
    )
    s.done()
    top.done()
    if cfg.token_min_ttl_s > cfg.token_max_ttl_s:
        raise ConfigError("playback.token_min_ttl_s: must not exceed playback.token_max_ttl_s")
    return cfg


def _public_url(url: str, key: str) -> str:
    """An origin (scheme://host[:port]) players reach this server at, or ""."""
    if not url:
        return ""
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path not in ("", "/") \
            or parsed.query or parsed.fragment or parsed.username is not None:
        raise ConfigError(f"{key}: scheme://host[:port] players reach this server at (no path), or empty")
    return url.rstrip("/")


def _origins(origins: list[str], key: str) -> tuple[str, ...]:
    """Web origins allowed by CORS: "*" alone, or exact scheme://host[:port] origins."""
    if origins == ["*"]:
        return ("*",)
    for i, o in enumerate(origins):
        parsed = urlsplit(o)
        if o == "*" or parsed.scheme not in ("http", "https") or not parsed.hostname or o.rstrip("/") != \
                f"{parsed.scheme}://{parsed.netloc}":
            raise ConfigError(f"{key}[{i}]: {o!r} is not an origin (scheme://host[:port]); \"*\" only alone")
    return tuple(origins)


def _http_url(url: str, key: str) -> str:
    if url and (not url.startswith(("http://", "https://")) or any(c.isspace() for c in url)):
        raise ConfigError(f"{key}: an http(s):// URL (Prometheus's, without /api/v1), or empty")
    return url.rstrip("/")


def _token(path: Path | None, key: str) -> str:
    """Playback's credential at steering (`steering callers add playback --roles steer,fleet`)."""
    if path is None:
        return ""
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{key}: {path}: {exc.strerror}") from None
    if not token or len(token) > 256 or not token.isascii() or any(c.isspace() for c in token):
        raise ConfigError(f"{key}: {path} must hold one token (the line `steering callers add` printed)")
    return token


_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # contracts.demand's grammar for a source and a region


def _demand(s: Section, base: Path | None, port: int) -> DemandSettings:
    d = DemandSettings()
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:57] or "playback"
    cfg = DemandSettings(
        state_dir=s.path("state_dir", base / "playback-demand" if base is not None else None, base=base),
        region=s.str("region", d.region), source=s.str("source", f"{host}-{port}"),
        half_life_s=s.float("half_life_s", d.half_life_s, min=1),
        max_entries=s.int("max_entries", d.max_entries, min=1000, max=MAX_FILES),
        compact_interval_s=s.float("compact_interval_s", d.compact_interval_s, min=0.1),
        fsync=s.bool("fsync", d.fsync),
    )
    s.done()
    for name in ("region", "source"):
        if not _NAME.fullmatch(getattr(cfg, name)):
            raise ConfigError(f"{s.key(name)}: must be 1-64 of [A-Za-z0-9_.-]")
    return cfg


def s3_config() -> S3Config:
    return S3Config()
