"""The appliance's typed config: `load(path)` reads TOML, `parse(mapping)` builds frozen dataclasses
and names the dotted key of any error. `dev_config(dir)` is the one-disk config of `--dev DIR`."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any, Mapping

from contracts.tomlconf import ConfigError, Section, read_toml
from oca.bgp.config import BgpConfig, parse_bgp
from oca.tlsconf import TlsConfig, parse_tls

__all__ = ["ConfigError", "Tier", "DiskConfig", "HttpConfig", "AdminConfig", "TokenConfig",
           "StoreConfig", "MoverConfig", "PullThroughConfig", "SteeringLinkConfig", "OcaConfig", "load", "parse", "dev_config"]


ACCESS_LOG_FORMATS = ("json", "combined")


class Tier(str, Enum):
    SSD = "ssd"
    HDD = "hdd"


@dataclass(frozen=True)
class DiskConfig:
    path: Path  # mount point; files live at path/<file key>, partial files under path/.tmp/
    tier: Tier
    reserve_bytes: int = 0  # kept free for the filesystem's own health


@dataclass(frozen=True)
class HttpConfig:
    listen: str = "0.0.0.0"
    port: int = 8080
    workers: int = 0  # 0: one per core
    sendfile: bool = True
    keepalive_timeout_s: float = 75.0
    header_timeout_s: float = 10.0  # whole request head must arrive within this (slowloris)
    send_timeout_s: float = 60.0  # a client that takes no bytes for this long is dropped
    max_header_bytes: int = 16384
    max_connections: int = 20000  # per worker; beyond it new connections are closed at once
    drain_timeout_s: float = 30.0
    cache_control: str = "private, max-age=86400"
    # Access log: True = stdout (journald under systemd), a Path = that file (one per appliance, every
    # worker appends whole lines; reopened on SIGUSR1 for logrotate), False = off.
    access_log: bool | Path = True
    access_log_format: str = "json"  # "json" (one object per line) or "combined" (nginx's, plus id and prefix)
    access_log_buffer_bytes: int = 65536  # a worker writes its lines once this many bytes are buffered...
    access_log_flush_s: float = 1.0  # ...or this often; and always on drain, reload and shutdown
    cors_allow_origin: str = "*"  # browsers' players fetch from other origins; the token guards access


@dataclass(frozen=True)
class AdminConfig:
    listen: str = "127.0.0.1"
    port: int = 9180


@dataclass(frozen=True)
class TokenConfig:
    key_file: Path
    client_prefix_v4: int = 24
    client_prefix_v6: int = 48
    default_ttl_s: int = 6 * 3600


@dataclass(frozen=True)
class StoreConfig:
    index_path: Path
    eviction: str = "lowest-popularity"  # or "lru"
    popularity_half_life_s: float = 86400.0
    disk_check_interval_s: float = 5.0
    scrub_rate_bps: int = 50_000_000  # bytes/s the integrity scrub re-reads (0: no scrub)
    scrub_pause_s: float = 3600.0  # rest between two passes over every file


@dataclass(frozen=True)
class MoverConfig:
    enabled: bool = True
    interval_s: float = 60.0
    io_budget_bps: int = 200_000_000  # bytes per second the mover may copy between tiers
    ssd_high_water: float = 0.90  # fraction of an SSD tier the mover fills at most


@dataclass(frozen=True)
class PullThroughConfig:
    enabled: bool = False
    parent: str | None = None  # base URL of another appliance or the origin
    timeout_s: float = 10.0  # connect / between-bytes timeout towards the parent
    wait_s: float = 2.0  # how long a request waits for its pull before the fast 404
    retry_after_s: float = 30.0  # a key whose pull failed is not pulled again before this
    key_file: Path | None = None  # this appliance's fill keys for the parent (`steering keys derive --pull-from`)


@dataclass(frozen=True)
class SteeringLinkConfig:
    urls: tuple[str, ...] = ()  # every steering replica; each gets every heartbeat
    report_interval_s: float = 5.0


@dataclass(frozen=True)
class OcaConfig:
    appliance_id: str
    site: str
    http: HttpConfig
    admin: AdminConfig
    tokens: TokenConfig
    store: StoreConfig
    disks: tuple[DiskConfig, ...]
    mover: MoverConfig = field(default_factory=MoverConfig)
    pull_through: PullThroughConfig = field(default_factory=PullThroughConfig)
    steering: SteeringLinkConfig = field(default_factory=SteeringLinkConfig)
    bgp: BgpConfig | None = None  # [bgp]: sessions with the ISP's routers (oca.bgp); None: no BGP
    tls: TlsConfig | None = None  # [tls]: HTTPS listener (oca.tlsconf, oca/http/tls.py); None: plain HTTP only
    egress_capacity_bps: int = 10_000_000_000
    source: Path | None = None  # the file it was read from (for SIGHUP reloads)
    dev: bool = False

    def effective_workers(self) -> int:
        return self.http.workers or (os.cpu_count() or 1)

    def disks_of(self, tier: Tier) -> tuple[DiskConfig, ...]:
        return tuple(d for d in self.disks if d.tier is tier)


def load(path: Path) -> OcaConfig:
    path = Path(path).resolve()
    return parse(read_toml(path), base=path.parent, source=path)


def parse(mapping: Mapping[str, Any], base: Path | None = None, source: Path | None = None) -> OcaConfig:
    top = Section(mapping)
    app = top.section("appliance")
    config = OcaConfig(
        appliance_id=app.str("id"),
        site=app.str("site", "default"),
        egress_capacity_bps=app.int("egress_capacity_bps", 10_000_000_000, min=1),
        http=_http(top.section("http", {}), base),
        admin=_admin(top.section("admin", {})),
        tokens=_tokens(top.section("tokens"), base),
        store=_store(top.section("store"), base),
        disks=_disks(top.section("tiers"), base),
        mover=_mover(top.section("mover", {})),
        pull_through=_pull_through(top.section("pull_through", {}), base),
        steering=_steering(top.section("steering", {})),
        bgp=parse_bgp(top.section("bgp"), base) if top.has("bgp") else None,
        source=source,
    )
    if top.has("tls"):
        config = replace(config, tls=parse_tls(top.section("tls"), base, config.http.listen,
                                               config.http.header_timeout_s))
    app.done()
    top.done()
    return config


def _http(s: Section, base: Path | None = None) -> HttpConfig:
    d = HttpConfig()
    cfg = HttpConfig(
        listen=s.str("listen", d.listen),
        port=s.int("port", d.port, min=0, max=65535),
        workers=s.int("workers", d.workers, min=0, max=256),
        sendfile=s.bool("sendfile", d.sendfile),
        keepalive_timeout_s=s.float("keepalive_timeout_s", d.keepalive_timeout_s, min=0.1),
        header_timeout_s=s.float("header_timeout_s", d.header_timeout_s, min=0.1),
        send_timeout_s=s.float("send_timeout_s", d.send_timeout_s, min=0.1),
        max_header_bytes=s.int("max_header_bytes", d.max_header_bytes, min=1024, max=1 << 20),
        max_connections=s.int("max_connections", d.max_connections, min=1),
        drain_timeout_s=s.float("drain_timeout_s", d.drain_timeout_s, min=0),
        cache_control=s.str("cache_control", d.cache_control),
        access_log=_access_log(s, base),
        access_log_format=s.str("access_log_format", d.access_log_format, choices=ACCESS_LOG_FORMATS),
        access_log_buffer_bytes=s.int("access_log_buffer_bytes", d.access_log_buffer_bytes, min=0, max=16 << 20),
        access_log_flush_s=s.float("access_log_flush_s", d.access_log_flush_s, min=0.01, max=3600),
        cors_allow_origin=s.str("cors_allow_origin", d.cors_allow_origin),
    )
    s.done()
    return cfg


def _access_log(s: Section, base: Path | None) -> bool | Path:
    """`access_log = true | false | "stdout" | "journald" | "/var/log/oca/access.log"`: the boolean of
    earlier configs keeps its meaning (true: lines on stdout); a relative path is taken against the
    config file's directory."""
    value = s.raw("access_log", True)
    if isinstance(value, bool):
        return value
    if value in ("stdout", "journald"):
        return True
    if not isinstance(value, str) or not value or value.endswith("/"):
        raise ConfigError(f'{s.key("access_log")}: must be true, false, "stdout" or a file path')
    return s.path("access_log", base=base)


def _admin(s: Section) -> AdminConfig:
    d = AdminConfig()
    cfg = AdminConfig(listen=s.str("listen", d.listen), port=s.int("port", d.port, min=0, max=65535))
    s.done()
    return cfg


def _tokens(s: Section, base: Path | None) -> TokenConfig:
    cfg = TokenConfig(
        key_file=s.path("key_file", base=base),
        client_prefix_v4=s.int("client_prefix_v4", 24, min=0, max=32),
        client_prefix_v6=s.int("client_prefix_v6", 48, min=0, max=128),
        default_ttl_s=s.int("default_ttl_s", 6 * 3600, min=1),
    )
    s.done()
    return cfg


def _store(s: Section, base: Path | None) -> StoreConfig:
    cfg = StoreConfig(
        index_path=s.path("index", base=base),
        eviction=s.str("eviction", "lowest-popularity", choices=("lowest-popularity", "lru")),
        popularity_half_life_s=s.float("popularity_half_life_s", 86400.0, min=1),
        disk_check_interval_s=s.float("disk_check_interval_s", 5.0, min=0.1),
        scrub_rate_bps=s.int("scrub_rate_bps", 50_000_000, min=0),
        scrub_pause_s=s.float("scrub_pause_s", 3600.0, min=0.0),
    )
    s.done()
    return cfg


def _disks(s: Section, base: Path | None) -> tuple[DiskConfig, ...]:
    disks: list[DiskConfig] = []
    for tier in Tier:
        if not s.has(tier.value):
            continue
        for disk in s.sections(tier.value):
            disks.append(DiskConfig(
                path=disk.path("path", base=base),
                tier=tier,
                reserve_bytes=disk.int("reserve_bytes", 0, min=0),
            ))
            disk.done()
    s.done()
    if not disks:
        raise ConfigError("tiers: at least one disk under tiers.ssd or tiers.hdd")
    paths = [d.path for d in disks]
    for i, p in enumerate(paths):
        if p in paths[:i]:
            raise ConfigError(f"tiers: disk path {p} listed twice")
    return tuple(disks)


def _mover(s: Section) -> MoverConfig:
    d = MoverConfig()
    cfg = MoverConfig(
        enabled=s.bool("enabled", d.enabled),
        interval_s=s.float("interval_s", d.interval_s, min=0.1),
        io_budget_bps=s.int("io_budget_bps", d.io_budget_bps, min=1),
        ssd_high_water=s.float("ssd_high_water", d.ssd_high_water, min=0.1, max=1.0),
    )
    s.done()
    return cfg


def _pull_through(s: Section, base: Path | None) -> PullThroughConfig:
    cfg = PullThroughConfig(
        enabled=s.bool("enabled", False),
        parent=s.str("parent", None),
        timeout_s=s.float("timeout_s", 10.0, min=0.1),
        wait_s=s.float("wait_s", 2.0, min=0.0),
        retry_after_s=s.float("retry_after_s", 30.0, min=0.0),
        key_file=s.path("key_file", None, base=base),
    )
    s.done()
    if cfg.enabled and not cfg.parent:
        raise ConfigError("pull_through.parent: required when pull_through.enabled is true")
    if cfg.enabled and cfg.key_file is None:
        raise ConfigError("pull_through.key_file: required when pull_through.enabled is true "
                          "(this appliance's fill keys for the parent: steering keys derive --pull-from PARENT)")
    return cfg


def _steering(s: Section) -> SteeringLinkConfig:
    urls = tuple(s.str_list("urls", []))
    for i, url in enumerate(urls):
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{s.key('urls')}[{i}]: must be an http:// or https:// URL")
    cfg = SteeringLinkConfig(urls=urls, report_interval_s=s.float("report_interval_s", 5.0, min=0.1))
    s.done()
    return cfg


def dev_config(directory: Path, port: int = 8080, workers: int = 1, sendfile: bool = True,
               admin_port: int = 0) -> OcaConfig:
    """`oca serve --dev DIR`: DIR is one SSD disk, state (key, index) under DIR/.oca."""
    directory = Path(directory).resolve()
    state = directory / ".oca"
    return OcaConfig(
        appliance_id="dev",
        site="dev",
        http=HttpConfig(listen="127.0.0.1", port=port, workers=workers, sendfile=sendfile),
        admin=AdminConfig(listen="127.0.0.1", port=admin_port),
        tokens=TokenConfig(key_file=state / "keys.toml"),
        store=StoreConfig(index_path=state / "index.db"),
        disks=(DiskConfig(path=directory, tier=Tier.SSD),),
        mover=MoverConfig(enabled=False),
        dev=True,
    )
