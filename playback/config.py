"""Playback's typed config: `load(path)` reads TOML; `parse(mapping)` checks it against `PlaybackFile` (one
msgspec Struct per table, contracts.structconf: each default on its field, errors naming the dotted key)
and builds the `PlaybackConfig` playback runs with: [playback]'s settings, [origin] as a Location, the
files it names read (steering token, callers), [demand]'s defaults filled in. Relative paths are taken
against the config file's folder. See config/playback.example.toml for every setting."""
from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Mapping
from urllib.parse import urlsplit

from msgspec import Meta
from msgspec.structs import asdict, force_setattr, replace

from contracts.callers import Caller, parse_callers
from contracts.demand import MAX_FILES
from contracts.structconf import Conf, ConfigError, convert, invalid, read_toml
from contracts.tlsserve import TlsSettings
from contracts.webguard import GuardConfig
from origin.config import Location, OriginTable, S3Config, parse_location

__all__ = ["ConfigError", "DemandSettings", "PlaybackTable", "PlaybackFile", "PlaybackConfig", "load", "parse"]

Seconds = Annotated[float, Meta(ge=0)]
# contracts.demand's grammar for a source and a region (a source may be left "": the default)
_SAYS = {"says": "must be 1-64 of [A-Za-z0-9_.-]"}
Region = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}\Z", extra=_SAYS)]
Source = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{0,64}\Z", extra=_SAYS)]


class DemandSettings(Conf):
    """[demand]: watched bytes per (region, file) from viewing events, spooled durably (playback.demand)."""

    # the spool (diskcache), this replica's alone; default `playback-demand` beside the config; None (no
    # config file): kept in memory only
    state_dir: Path | None = None
    region: Region = "all"  # the region events count in: playback does not localise clients (see playback.demand)
    source: Source = ""  # this replica's name in GET /v1/demand; default "<hostname>-<port>"
    half_life_s: Annotated[float, Meta(ge=1)] = 86400.0
    max_entries: Annotated[int, Meta(ge=1000, le=MAX_FILES)] = 1_000_000  # (region, file) pairs kept, the hottest
    compact_interval_s: Annotated[float, Meta(ge=0.1)] = 60.0  # the spool's log is folded into one snapshot this often
    # each accepted batch is synced to disk before the 2xx (power loss too), else only written (a crash of
    # the process loses nothing, a crash of the host may)
    fsync: bool = True


class PlaybackTable(GuardConfig, kw_only=True):
    """[playback] as written; the guard's keys (contracts.webguard: connection timeouts and cap, body
    limits) sit flat beside these."""

    steering_urls: tuple[str, ...]  # every steering replica, tried in order
    steering_token_file: Path | None = None  # playback's bearer token at steering (`steering callers add`)
    listen: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8090
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-For we believe
    steering_timeout_s: Annotated[float, Meta(ge=0.05, le=60)] = 2.0
    retry_after_s: Annotated[int, Meta(ge=1, le=3600)] = 5  # Retry-After on 503 when steering is unreachable
    fleet_cache_s: Annotated[float, Meta(ge=0, le=60)] = 1.0  # steering's /v1/fleet is fetched at most this often
    catalog_cache_s: Annotated[float, Meta(ge=0, le=3600)] = 5.0
    max_pathways: Annotated[int, Meta(ge=1, le=16)] = 4
    content_steering: bool = True
    # Where players reach this server, for the absolute steering URIs in manifests (dash.js does not
    # resolve a relative ContentSteering URL): e.g. "https://play.example.net"; "" = from each request
    public_url: str = ""
    # CORS for player pages on other origins (the usual case: a service's site embeds the player while
    # the playback API lives elsewhere) on the player-facing routes: titles, playback, events, fleet.
    # ["*"] = any origin; [] = none. Credentials are never allowed: nothing here uses cookies.
    cors_allow_origins: tuple[str, ...] = ("*",)
    steering_ttl_s: Annotated[int, Meta(ge=1, le=86400)] = 10  # the steering manifest's TTL: how often players re-steer
    saturation_fraction: Annotated[float, Meta(ge=0.1, le=10)] = 0.9  # egress / capacity moving an appliance last
    token_duration_factor: Annotated[float, Meta(ge=1, le=100)] = 2.0
    token_slack_s: Annotated[int, Meta(ge=0)] = 3600
    token_min_ttl_s: Annotated[int, Meta(ge=60)] = 3600
    token_max_ttl_s: Annotated[int, Meta(ge=60)] = 2 * 86400  # must not exceed steering's tokens.max_ttl_s
    popularity_half_life_s: Annotated[float, Meta(ge=1)] = 86400.0
    max_events_per_request: Annotated[int, Meta(ge=1, le=10_000)] = 100
    drain_grace_s: Seconds = 1.0
    drain_timeout_s: Seconds = 10.0
    max_event_body_bytes: Annotated[int, Meta(ge=1024, le=16 << 20)] = 64 << 10  # POST /v1/events: 100 events ~20 KB
    callers_file: Path | None = None  # who may read GET /v1/demand (role "demand"): contracts.callers
    # the fleet page's charts (GET /v1/fleet/charts): queries to this Prometheus, which scrapes the
    # appliances with target labels `appliance` and `site` (playback.core.charts); "" = no charts endpoint
    prometheus_url: str = ""
    prometheus_timeout_s: Annotated[float, Meta(ge=0.1, le=60)] = 5.0
    charts_rate_window_s: Annotated[float, Meta(ge=1, le=3600)] = 60.0  # rate() over at least 4 scrape intervals
    charts_cache_s: Annotated[float, Meta(ge=0, le=60)] = 2.0  # one answer per range this often, however many pages

    def __post_init__(self) -> None:
        urls = tuple(u.rstrip("/") for u in self.steering_urls)
        if not urls or not all(u.startswith(("http://", "https://")) for u in urls):
            raise invalid("steering_urls", "one or more http(s):// URLs of steering replicas")
        force_setattr(self, "steering_urls", urls)
        for i, p in enumerate(self.trusted_proxies):
            try:
                ipaddress.ip_network(p, strict=False)
            except ValueError:
                raise invalid(f"trusted_proxies[{i}]", f"{p!r} is not an IP network") from None
        force_setattr(self, "public_url", _public_url(self.public_url))
        _check_origins(self.cors_allow_origins)
        force_setattr(self, "prometheus_url", _http_url(self.prometheus_url))
        if self.token_min_ttl_s > self.token_max_ttl_s:
            raise invalid("token_min_ttl_s", "must not exceed playback.token_max_ttl_s")

    @property
    def guard(self) -> GuardConfig:
        return self


class PlaybackFile(Conf):
    """playback.toml as written."""

    playback: PlaybackTable
    origin: OriginTable
    demand: DemandSettings = DemandSettings()
    tls: TlsSettings | None = None  # HTTPS on listen:port (contracts.tlsserve); none: plain HTTP


class PlaybackConfig(PlaybackTable, kw_only=True):
    """What playback runs with (built by `parse`): [playback]'s settings, and what it makes of the rest."""

    origin: Location
    steering_token: str  # read from steering_token_file ("" without one)
    callers: Mapping[str, Caller]  # read from callers_file, by token hash
    demand: DemandSettings  # its defaults filled in
    tls: TlsSettings | None
    source: Path | None = None  # the file it was read from (for reloads)


def load(path: Path) -> PlaybackConfig:
    path = Path(path).resolve()
    return parse(read_toml(path), base=path.parent, source=path)


def parse(mapping: Mapping[str, Any], base: Path | None = None, source: Path | None = None) -> PlaybackConfig:
    f = convert(PlaybackFile, mapping, base=base)
    s, o = f.playback, f.origin
    origin = parse_location(o.location, o.endpoint_url, o.region, base, where="origin.location")
    demand = f.demand
    if demand.state_dir is None and base is not None:
        demand = replace(demand, state_dir=base / "playback-demand")
    if not demand.source:
        host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:57] or "playback"
        demand = replace(demand, source=f"{host}-{s.port}")
    callers = parse_callers(read_toml(s.callers_file), where=str(s.callers_file)) if s.callers_file else {}
    return PlaybackConfig(**asdict(s), origin=origin, demand=demand, tls=f.tls, source=source, callers=callers,
                          steering_token=_token(s.steering_token_file))


def _public_url(url: str) -> str:
    """An origin (scheme://host[:port]) players reach this server at, or ""."""
    if not url:
        return ""
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path not in ("", "/") \
            or parsed.query or parsed.fragment or parsed.username is not None:
        raise invalid("public_url", "scheme://host[:port] players reach this server at (no path), or empty")
    return url.rstrip("/")


def _check_origins(origins: tuple[str, ...]) -> None:
    """Web origins allowed by CORS: "*" alone, or exact scheme://host[:port] origins."""
    if origins == ("*",):
        return
    for i, o in enumerate(origins):
        parsed = urlsplit(o)
        if o == "*" or parsed.scheme not in ("http", "https") or not parsed.hostname or o.rstrip("/") != \
                f"{parsed.scheme}://{parsed.netloc}":
            raise invalid(f"cors_allow_origins[{i}]",
                          f"{o!r} is not an origin (scheme://host[:port]); \"*\" only alone")


def _http_url(url: str) -> str:
    if url and (not url.startswith(("http://", "https://")) or any(c.isspace() for c in url)):
        raise invalid("prometheus_url", "an http(s):// URL (Prometheus's, without /api/v1), or empty")
    return url.rstrip("/")


def _token(path: Path | None, key: str = "playback.steering_token_file") -> str:
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


def s3_config() -> S3Config:
    return S3Config()
