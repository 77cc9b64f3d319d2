"""Steering's typed config: `load(path)` reads TOML; `parse(mapping)` checks it against `SteeringFile` (one
msgspec Struct per table, contracts.structconf: each default on its field, errors naming the dotted key)
and builds the `SteeringConfig` steering runs with: [steering]'s flat keys split into the files, the
server (with the connection guard's keys) and the fleet's URL; [health], [ranking] and [pull_through]
as the core's policies. Relative paths are taken against the config file's folder."""
from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Annotated, Any, Mapping
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta
from msgspec.structs import asdict, replace

from contracts.demand import MAX_FILES
from contracts.ids import SiteId
from contracts.structconf import Conf, ConfigError, convert, invalid, read_toml
from contracts.tlsserve import TlsSettings
from contracts.webguard import GuardConfig
from steering.core.admission import PullPolicy
from steering.core.health import HealthPolicy
from steering.core.rank import RankPolicy
from steering.fillplan import FillConfig

__all__ = ["ConfigError", "ServerConfig", "FleetFetchConfig", "TokenConfig", "GeoConfig", "HealthTable",
           "RankingTable", "DemandConfig", "PullThroughConfig", "SteeringTable", "SteeringFile", "SteeringConfig",
           "load", "parse", "default_source"]

Seconds = Annotated[float, Meta(ge=0)]
# contracts.demand's grammar for a source; "" here: the default (default_source)
Source = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{0,64}\Z", extra={"says": "must be 1-64 of [A-Za-z0-9_.-]"})]
_HEALTH, _RANK, _PULL = HealthPolicy(), RankPolicy(), PullPolicy()  # the core's defaults


class ServerConfig(GuardConfig, kw_only=True):
    """[steering]'s server settings; the guard's keys (contracts.webguard: connection timeouts and cap,
    body limits) sit flat beside them."""

    listen: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8100
    # fleet and key files are polled for changes this often (besides SIGHUP)
    reload_check_interval_s: Annotated[float, Meta(ge=0.1)] = 2.0
    drain_grace_s: Seconds = 1.0  # SIGTERM: /healthz answers 503 this long before the listener closes
    drain_timeout_s: Seconds = 10.0  # then in-flight requests get this long to finish
    max_heartbeat_bytes: Annotated[int, Meta(ge=1 << 16)] = 64 << 20  # a full inventory of ~10^5 keys is a few MB
    max_files_per_request: Annotated[int, Meta(ge=1)] = 1000  # POST /v1/steer
    log_decisions: bool = True  # one structured log line per decision (counters are always kept)
    heartbeat_auth: bool = True  # reports must be signed with a key of the key file
    heartbeat_max_skew_s: Annotated[float, Meta(ge=1)] = 300.0  # a report's sent_at may differ this much from ours
    # POST /v1/steer: 1000 file keys are ~100 KB
    max_steer_body_bytes: Annotated[int, Meta(ge=4096, le=64 << 20)] = 1 << 20

    @property
    def guard(self) -> GuardConfig:
        return self


class SteeringTable(ServerConfig, kw_only=True):
    """[steering] as written: the files, the server's settings, and the fleet's URL with its settings."""

    fleet_file: Path
    key_file: Path
    default_site: str
    callers_file: Path | None = None  # who may call /v1/steer, /v1/fleet, …: bearer tokens by hash, with roles
    fleet_url: str | None = None  # see FleetFetchConfig; kept exactly as written (a trailing slash or query may matter)
    fleet_poll_interval_s: Annotated[float, Meta(ge=1)] = 300.0
    fleet_fetch_timeout_s: Annotated[float, Meta(ge=0.1)] = 30.0
    fleet_max_bytes: Annotated[int, Meta(ge=1024, le=1 << 30)] = 64 << 20

    def __post_init__(self) -> None:
        if self.fleet_url is not None:
            parts = urlsplit(self.fleet_url)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
                raise invalid("fleet_url", "must be an http(s) URL, e.g. https://to.example.net/czf.json")

    def server(self) -> ServerConfig:
        return ServerConfig(**{name: getattr(self, name) for name in ServerConfig.__struct_fields__})


class FleetFetchConfig(msgspec.Struct, frozen=True, kw_only=True):
    """[steering] fleet_url and its settings: the fleet (a coverage-zone file, or our TOML) polled from a
    URL with If-None-Match / If-Modified-Since (steering.fleetfetch); fleet_file then holds the last
    good download, read at start. Built from SteeringTable's fleet_* keys."""

    url: str | None
    poll_interval_s: float
    timeout_s: float
    max_bytes: int


class TokenConfig(Conf):
    ttl_s: Annotated[int, Meta(ge=1)] = 6 * 3600
    max_ttl_s: Annotated[int, Meta(ge=1)] = 2 * 86400  # the most a caller may ask for with ttl_s
    client_prefix_v4: Annotated[int, Meta(ge=0, le=32)] = 24
    client_prefix_v6: Annotated[int, Meta(ge=0, le=128)] = 48

    def __post_init__(self) -> None:
        if self.ttl_s > self.max_ttl_s:
            raise invalid("ttl_s", "must not exceed tokens.max_ttl_s")


class GeoConfig(Conf):
    database: Path | None = None  # a MaxMind GeoIP2/GeoLite2 City .mmdb
    slack_km: Annotated[float, Meta(ge=0)] = 50.0  # sites this much farther than the nearest count as equally near


class HealthTable(Conf):
    """[health]: steering.core.health's HealthPolicy, which holds the defaults."""

    interval_s: Annotated[float, Meta(ge=0.05)] = msgspec.field(default=_HEALTH.interval_s, name="report_interval_s")
    missed_reports: Annotated[int, Meta(ge=1)] = _HEALTH.missed_reports
    egress_down_fraction: Annotated[float, Meta(ge=0.01, le=10)] = _HEALTH.egress_down_fraction
    egress_up_fraction: Annotated[float, Meta(ge=0, le=10)] = _HEALTH.egress_up_fraction
    max_failed_disk_fraction: Annotated[float, Meta(ge=0, le=1)] = _HEALTH.max_failed_disk_fraction
    down_after: Annotated[int, Meta(ge=1)] = msgspec.field(default=_HEALTH.down_after, name="down_after_reports")
    up_after: Annotated[int, Meta(ge=1)] = msgspec.field(default=_HEALTH.up_after, name="up_after_reports")

    def __post_init__(self) -> None:
        if self.egress_up_fraction > self.egress_down_fraction:
            raise invalid("egress_up_fraction", "must not exceed health.egress_down_fraction")

    def policy(self) -> HealthPolicy:
        return HealthPolicy(**asdict(self))


class RankingTable(Conf):
    """[ranking]: what of steering.core.rank's RankPolicy (which holds the defaults) is configurable."""

    max_locations: Annotated[int, Meta(ge=1, le=16)] = _RANK.max_locations
    min_sites: Annotated[int, Meta(ge=1, le=16)] = _RANK.min_sites

    def policy(self) -> RankPolicy:
        return RankPolicy(max_locations=self.max_locations, min_sites=self.min_sites)


class DemandConfig(Conf):
    """[demand]: what clients asked for, per client site and file (steering.demand)."""

    half_life_s: Annotated[float, Meta(ge=1)] = 86400.0  # counts halve this often (as the appliances' popularity does)
    max_entries: Annotated[int, Meta(ge=1000, le=MAX_FILES)] = 1_000_000  # (site, file) pairs kept; ~130 B each
    state_dir: Path | None = None  # the saved counts (diskcache); default `steering-demand` beside the config
    save_interval_s: Annotated[float, Meta(ge=0.1)] = 300.0  # saved this often and at SIGTERM; a crash loses this much
    source: Source = ""  # this replica's name in GET /v1/demand; default "<hostname>-<port>" (default_source)


class PullThroughConfig(Conf):
    """[pull_through]: when a site's clients go to their own appliance for a file the site lacks, so it
    pulls the file in (steering.core.admission, whose PullPolicy holds the admission defaults). Only
    sites with an appliance reporting pull-through."""

    enabled: bool = True
    misses_to_admit: Annotated[int, Meta(ge=1, le=1000)] = _PULL.misses_to_admit
    window_s: Annotated[float, Meta(ge=1)] = _PULL.window_s
    hold_s: Seconds = 120.0  # after admitting, keep sending the site's clients there until its inventory shows it
    max_entries: Annotated[int, Meta(ge=1, le=10_000_000)] = 200_000  # (site, file) pairs, least recently missed go

    @property
    def policy(self) -> PullPolicy:
        return PullPolicy(misses_to_admit=self.misses_to_admit, window_s=self.window_s)


class SteeringFile(Conf):
    """steering.toml as written."""

    steering: SteeringTable
    tokens: TokenConfig = TokenConfig()
    geo: GeoConfig = GeoConfig()
    health: HealthTable = HealthTable()
    ranking: RankingTable = RankingTable()
    fill: FillConfig = FillConfig()
    demand: DemandConfig = DemandConfig()
    pull_through: PullThroughConfig = PullThroughConfig()
    tls: TlsSettings | None = None  # HTTPS on listen:port (contracts.tlsserve); none: plain HTTP


class SteeringConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What steering runs with (built by `parse`)."""

    fleet_file: Path
    key_file: Path
    default_site: SiteId
    callers_file: Path | None
    server: ServerConfig
    fleet_fetch: FleetFetchConfig
    tokens: TokenConfig
    geo: GeoConfig
    health: HealthPolicy
    ranking: RankPolicy
    tick_interval_s: float  # how often missed reports are looked for
    fill: FillConfig
    demand: DemandConfig
    pull_through: PullThroughConfig
    tls: TlsSettings | None
    source: Path | None = None  # the file it was read from (for reloads)


def load(path: Path) -> SteeringConfig:
    path = Path(path).resolve()
    return parse(read_toml(path), base=path.parent, source=path)


def parse(mapping: Mapping[str, Any], base: Path | None = None, source: Path | None = None) -> SteeringConfig:
    f = convert(SteeringFile, mapping, base=base)
    s, health = f.steering, f.health.policy()
    demand = f.demand
    if demand.state_dir is None and base is not None:
        demand = replace(demand, state_dir=base / "steering-demand")
    if not demand.source:
        demand = replace(demand, source=default_source(s.port))
    return SteeringConfig(
        fleet_file=s.fleet_file, key_file=s.key_file, default_site=SiteId(s.default_site), callers_file=s.callers_file,
        server=s.server(),
        fleet_fetch=FleetFetchConfig(url=s.fleet_url, poll_interval_s=s.fleet_poll_interval_s,
                                     timeout_s=s.fleet_fetch_timeout_s, max_bytes=s.fleet_max_bytes),
        tokens=f.tokens, geo=f.geo, health=health, ranking=f.ranking.policy(),
        tick_interval_s=min(0.25, health.interval_s / 4),
        fill=f.fill.against(base), demand=demand, pull_through=f.pull_through, tls=f.tls, source=source,
    )


def default_source(port: int) -> str:
    """The default demand source: the host name and the port, in the characters a source may use."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:57] or "steering"
    return f"{host}-{port}"
