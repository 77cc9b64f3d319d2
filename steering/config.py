"""Steering's typed config: `load(path)` reads TOML, `parse(mapping)` builds frozen dataclasses and names
the dotted key of any error. Relative paths are taken against the config file's folder."""
from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from contracts.demand import MAX_FILES
from contracts.ids import SiteId
from contracts.tlsserve import TlsSettings, parse_tls
from contracts.tomlconf import ConfigError, Section, read_toml
from contracts.webguard import GuardConfig, parse_guard
from steering.core.health import HealthPolicy
from steering.core.admission import PullPolicy
from steering.core.rank import RankPolicy
from steering.fillplan import FillConfig, parse_fill

__all__ = ["ConfigError", "ServerConfig", "FleetFetchConfig", "TokenConfig", "GeoConfig", "DemandConfig",
           "SteeringConfig", "load", "parse"]


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1"
    port: int = 8100
    reload_check_interval_s: float = 2.0  # fleet and key files are polled for changes (besides SIGHUP)
    drain_grace_s: float = 1.0  # SIGTERM: /healthz answers 503 this long before the listener closes
    drain_timeout_s: float = 10.0  # then in-flight requests get this long to finish
    max_heartbeat_bytes: int = 64 << 20  # a full inventory of ~10^5 keys is a few MB
    max_files_per_request: int = 1000  # POST /v1/steer
    log_decisions: bool = True  # one structured log line per decision (counters are always kept)
    heartbeat_auth: bool = True  # reports must be signed with a key of the key file
    heartbeat_max_skew_s: float = 300.0  # a report's sent_at may differ this much from our clock
    # abuse shedding (contracts.webguard): connection timeouts and cap, body limits
    guard: GuardConfig = field(default_factory=GuardConfig)
    max_steer_body_bytes: int = 1 << 20  # POST /v1/steer: 1000 file keys are ~100 KB


@dataclass(frozen=True)
class TokenConfig:
    ttl_s: int = 6 * 3600
    max_ttl_s: int = 2 * 86400  # the most a caller may ask for with ttl_s
    client_prefix_v4: int = 24
    client_prefix_v6: int = 48


@dataclass(frozen=True)
class GeoConfig:
    database: Path | None = None  # a MaxMind GeoIP2/GeoLite2 City .mmdb
    slack_km: float = 50.0  # sites this much farther than the nearest still count as equally near


@dataclass(frozen=True)
class DemandConfig:
    """[demand]: what clients asked for, per client site and file (steering.demand)."""
    half_life_s: float = 86400.0  # counts halve this often (as the appliances' popularity does)
    max_entries: int = 1_000_000  # (site, file) pairs kept, the hottest; ~130 B each in memory
    state_dir: Path | None = None  # the saved counts (diskcache); default `steering-demand` beside the config
    save_interval_s: float = 300.0  # saved this often and at SIGTERM; a crash loses at most this much
    source: str = ""  # this replica's name in GET /v1/demand; default "<hostname>-<port>"


@dataclass(frozen=True)
class PullThroughConfig:
    """[pull_through]: when a site's clients go to their own appliance for a file the site lacks, so it
    pulls the file in (steering.core.admission). Only sites with an appliance reporting pull-through."""
    enabled: bool = True
    policy: PullPolicy = field(default_factory=PullPolicy)  # misses_to_admit, window_s
    hold_s: float = 120.0  # after admitting, keep sending the site's clients there until its inventory shows it
    max_entries: int = 200_000  # (site, file) pairs remembered, least recently missed forgotten first


@dataclass(frozen=True)
class FleetFetchConfig:
    """[steering] fleet_url and its settings: the fleet (a coverage-zone file, or our TOML) polled from a
    URL with If-None-Match / If-Modified-Since (steering.fleetfetch); fleet_file then holds the last
    good download, read at start."""
    url: str | None = None
    poll_interval_s: float = 300.0
    timeout_s: float = 30.0
    max_bytes: int = 64 << 20


@dataclass(frozen=True)
class SteeringConfig:
    fleet_file: Path
    key_file: Path
    default_site: SiteId
    server: ServerConfig
    tokens: TokenConfig
    geo: GeoConfig
    health: HealthPolicy
    ranking: RankPolicy
    callers_file: Path | None = None  # who may call /v1/steer, /v1/fleet, …: bearer tokens by hash, with roles
    tick_interval_s: float = 0.25  # how often missed reports are looked for
    fill: FillConfig = field(default_factory=FillConfig)
    demand: DemandConfig = field(default_factory=DemandConfig)
    pull_through: PullThroughConfig = field(default_factory=PullThroughConfig)
    source: Path | None = None
    fleet_fetch: FleetFetchConfig = field(default_factory=FleetFetchConfig)
    tls: TlsSettings | None = None  # [tls]: HTTPS on listen:port (contracts.tlsserve)


def load(path: Path) -> SteeringConfig:
    path = Path(path).resolve()
    return parse(read_toml(path), base=path.parent, source=path)


def parse(mapping: Mapping[str, Any], base: Path | None = None, source: Path | None = None) -> SteeringConfig:
    top = Section(mapping)
    main = top.section("steering")
    health = _health(top.section("health", {}))
    server = _server(main)
    config = SteeringConfig(
        fleet_file=main.path("fleet_file", base=base),
        key_file=main.path("key_file", base=base),
        default_site=SiteId(main.str("default_site")),
        callers_file=main.path("callers_file", None, base=base),
        server=server,
        tokens=_tokens(top.section("tokens", {})),
        geo=_geo(top.section("geo", {}), base),
        health=health,
        ranking=_ranking(top.section("ranking", {})),
        tick_interval_s=min(0.25, health.interval_s / 4),
        fill=parse_fill(top.section("fill", {}), base),
        demand=_demand(top.section("demand", {}), base, server.port),
        pull_through=_pull_through(top.section("pull_through", {})),
        source=source,
        fleet_fetch=_fleet_fetch(main),
        tls=parse_tls(top, base),
    )
    main.done()
    top.done()
    return config


def _server(s: Section) -> ServerConfig:
    d = ServerConfig()
    return ServerConfig(
        listen=s.str("listen", d.listen),
        port=s.int("port", d.port, min=0, max=65535),
        reload_check_interval_s=s.float("reload_check_interval_s", d.reload_check_interval_s, min=0.1),
        drain_grace_s=s.float("drain_grace_s", d.drain_grace_s, min=0),
        drain_timeout_s=s.float("drain_timeout_s", d.drain_timeout_s, min=0),
        max_heartbeat_bytes=s.int("max_heartbeat_bytes", d.max_heartbeat_bytes, min=1 << 16),
        max_files_per_request=s.int("max_files_per_request", d.max_files_per_request, min=1),
        log_decisions=s.bool("log_decisions", d.log_decisions),
        heartbeat_auth=s.bool("heartbeat_auth", d.heartbeat_auth),
        heartbeat_max_skew_s=s.float("heartbeat_max_skew_s", d.heartbeat_max_skew_s, min=1),
        guard=parse_guard(s),
        max_steer_body_bytes=s.int("max_steer_body_bytes", d.max_steer_body_bytes, min=4096, max=64 << 20),
    )


def _fleet_fetch(s: Section) -> FleetFetchConfig:
    d = FleetFetchConfig()
    return FleetFetchConfig(
        url=_url(s, "fleet_url"),
        poll_interval_s=s.float("fleet_poll_interval_s", d.poll_interval_s, min=1),
        timeout_s=s.float("fleet_fetch_timeout_s", d.timeout_s, min=0.1),
        max_bytes=s.int("fleet_max_bytes", d.max_bytes, min=1024, max=1 << 30),
    )


def _url(s: Section, name: str) -> str | None:
    """An optional http(s) URL, kept exactly as written (a trailing slash or a query may matter)."""
    value = s.str(name, None)
    if value is not None:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
            raise ConfigError(f"{s.key(name)}: must be an http(s) URL, e.g. https://to.example.net/czf.json")
    return value


def _tokens(s: Section) -> TokenConfig:
    d = TokenConfig()
    cfg = TokenConfig(
        ttl_s=s.int("ttl_s", d.ttl_s, min=1),
        max_ttl_s=s.int("max_ttl_s", d.max_ttl_s, min=1),
        client_prefix_v4=s.int("client_prefix_v4", d.client_prefix_v4, min=0, max=32),
        client_prefix_v6=s.int("client_prefix_v6", d.client_prefix_v6, min=0, max=128),
    )
    s.done()
    if cfg.ttl_s > cfg.max_ttl_s:
        raise ConfigError("tokens.ttl_s: must not exceed tokens.max_ttl_s")
    return cfg


def _geo(s: Section, base: Path | None) -> GeoConfig:
    cfg = GeoConfig(database=s.path("database", None, base=base),
                    slack_km=s.float("slack_km", GeoConfig.slack_km, min=0))
    s.done()
    return cfg


def _health(s: Section) -> HealthPolicy:
    d = HealthPolicy()
    cfg = HealthPolicy(
        interval_s=s.float("report_interval_s", d.interval_s, min=0.05),
        missed_reports=s.int("missed_reports", d.missed_reports, min=1),
        egress_down_fraction=s.float("egress_down_fraction", d.egress_down_fraction, min=0.01, max=10),
        egress_up_fraction=s.float("egress_up_fraction", d.egress_up_fraction, min=0.0, max=10),
        max_failed_disk_fraction=s.float("max_failed_disk_fraction", d.max_failed_disk_fraction, min=0, max=1),
        down_after=s.int("down_after_reports", d.down_after, min=1),
        up_after=s.int("up_after_reports", d.up_after, min=1),
    )
    s.done()
    if cfg.egress_up_fraction > cfg.egress_down_fraction:
        raise ConfigError("health.egress_up_fraction: must not exceed health.egress_down_fraction")
    return cfg


def _ranking(s: Section) -> RankPolicy:
    d = RankPolicy()
    cfg = RankPolicy(
        max_locations=s.int("max_locations", d.max_locations, min=1, max=16),
        min_sites=s.int("min_sites", d.min_sites, min=1, max=16),
    )
    s.done()
    return cfg


def _pull_through(s: Section) -> PullThroughConfig:
    d, p = PullThroughConfig(), PullPolicy()
    cfg = PullThroughConfig(
        enabled=s.bool("enabled", d.enabled),
        policy=PullPolicy(misses_to_admit=s.int("misses_to_admit", p.misses_to_admit, min=1, max=1000),
                          window_s=s.float("window_s", p.window_s, min=1)),
        hold_s=s.float("hold_s", d.hold_s, min=0),
        max_entries=s.int("max_entries", d.max_entries, min=1, max=10_000_000),
    )
    s.done()
    return cfg


_SOURCE = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # contracts.demand's grammar for a source


def _demand(s: Section, base: Path | None, port: int) -> DemandConfig:
    d = DemandConfig()
    default_dir = base / "steering-demand" if base is not None else None
    cfg = DemandConfig(
        half_life_s=s.float("half_life_s", d.half_life_s, min=1),
        max_entries=s.int("max_entries", d.max_entries, min=1000, max=MAX_FILES),
        state_dir=s.path("state_dir", default_dir, base=base),
        save_interval_s=s.float("save_interval_s", d.save_interval_s, min=0.1),
        source=s.str("source", default_source(port)),
    )
    s.done()
    if not _SOURCE.fullmatch(cfg.source):
        raise ConfigError(f"{s.key('source')}: must be 1-64 of [A-Za-z0-9_.-]")
    return cfg


def default_source(port: int) -> str:
    """The default demand source: the host name and the port, in the characters a source may use."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:57] or "steering"
    return f"{host}-{port}"
