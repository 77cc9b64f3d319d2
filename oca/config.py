"""The appliance's typed config: `load(path)` reads TOML, `parse(mapping)` checks it against `OcaFile` (one
msgspec Struct per table, each default on its field, every error naming the dotted key) and builds the
`OcaConfig` the daemon runs with: [appliance] flattened, [tiers] as one tuple of disks, [bgp] as
oca.bgp.config's Struct, [tls] read by oca.tlsconf (its defaults come from [http]). `dev_config(dir)`
is the one-disk config of `--dev DIR`, built through the same checks."""
from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import msgspec
from msgspec import Meta
from msgspec.structs import force_setattr, replace

from contracts.structconf import Conf, ConfigError, HttpUrl, convert, invalid, read_toml
from oca.bgp.config import BgpConfig
from oca.tlsconf import TlsConfig, parse_tls

__all__ = ["ConfigError", "Tier", "ApplianceTable", "HttpConfig", "AdminConfig", "TokenConfig", "StoreConfig",
           "DiskTable", "DiskConfig", "TiersTable", "MoverConfig", "PullThroughConfig", "SteeringLinkConfig", "OcaFile",
           "OcaConfig", "load", "parse", "dev_config"]

Port = Annotated[int, Meta(ge=0, le=65535)]  # 0: any free port
Timeout = Annotated[float, Meta(ge=0.1)]


class Tier(str, Enum):
    SSD = "ssd"
    HDD = "hdd"


class ApplianceTable(Conf):
    id: str
    site: str = "default"
    egress_capacity_bps: Annotated[int, Meta(ge=1)] = 10_000_000_000


class HttpConfig(Conf):
    listen: str = "0.0.0.0"
    port: Port = 8080
    workers: Annotated[int, Meta(ge=0, le=256)] = 0  # 0: one per core
    sendfile: bool = True
    keepalive_timeout_s: Timeout = 75.0
    header_timeout_s: Timeout = 10.0  # whole request head must arrive within this (slowloris)
    send_timeout_s: Timeout = 60.0  # a client that takes no bytes for this long is dropped
    max_header_bytes: Annotated[int, Meta(ge=1024, le=1 << 20)] = 16384
    max_connections: Annotated[int, Meta(ge=1)] = 20000  # per worker; beyond it new connections are closed at once
    drain_timeout_s: Annotated[float, Meta(ge=0)] = 30.0
    cache_control: str = "private, max-age=86400"
    # Access log: `true | false | "stdout" | "journald" | "/var/log/oca/access.log"`, which __post_init__
    # makes True = stdout (journald under systemd), a Path = that file (one per appliance, every worker
    # appends whole lines; reopened on SIGUSR1 for logrotate) or False = off. A relative path is taken
    # against the config file's folder (`parse`).
    access_log: Annotated[bool | str, Meta(extra={"says": 'must be true, false, "stdout" or a file path'})] = True
    access_log_format: Literal["json", "combined"] = "json"  # one object per line, or nginx's plus id and prefix
    # A worker writes its lines once this many bytes are buffered, or every access_log_flush_s; and always
    # on drain, reload and shutdown.
    access_log_buffer_bytes: Annotated[int, Meta(ge=0, le=16 << 20)] = 65536
    access_log_flush_s: Annotated[float, Meta(ge=0.01, le=3600)] = 1.0
    cors_allow_origin: str = "*"  # browsers' players fetch from other origins; the token guards access

    def __post_init__(self) -> None:
        log = self.access_log
        if isinstance(log, (bool, Path)):
            return
        if not isinstance(log, str) or not log or log.endswith("/"):
            raise invalid("access_log", 'must be true, false, "stdout" or a file path')
        force_setattr(self, "access_log", True if log in ("stdout", "journald") else Path(log))


class AdminConfig(Conf):
    listen: str = "127.0.0.1"
    port: Port = 9180


class TokenConfig(Conf):
    key_file: Path
    client_prefix_v4: Annotated[int, Meta(ge=0, le=32)] = 24
    client_prefix_v6: Annotated[int, Meta(ge=0, le=128)] = 48
    default_ttl_s: Annotated[int, Meta(ge=1)] = 6 * 3600


class StoreConfig(Conf):
    index_path: Path = msgspec.field(name="index")
    eviction: Literal["lowest-popularity", "lru"] = "lowest-popularity"
    popularity_half_life_s: Annotated[float, Meta(ge=1)] = 86400.0
    disk_check_interval_s: Timeout = 5.0
    scrub_rate_bps: Annotated[int, Meta(ge=0)] = 50_000_000  # bytes/s the integrity scrub re-reads (0: no scrub)
    scrub_pause_s: Annotated[float, Meta(ge=0)] = 3600.0  # rest between two passes over every file


class DiskTable(Conf):
    """One [[tiers.ssd]] or [[tiers.hdd]] table."""

    path: Path  # mount point; files live at path/<file key>, partial files under path/.tmp/
    reserve_bytes: Annotated[int, Meta(ge=0)] = 0  # kept free for the filesystem's own health


class DiskConfig(DiskTable, kw_only=True):
    """A disk and the tier it is listed under."""

    tier: Tier


class TiersTable(Conf):
    ssd: tuple[DiskTable, ...] = ()
    hdd: tuple[DiskTable, ...] = ()

    def __post_init__(self) -> None:
        paths = [d.path for d in self.ssd + self.hdd]
        if not paths:
            raise ValueError("at least one disk under tiers.ssd or tiers.hdd")
        for i, p in enumerate(paths):
            if p in paths[:i]:
                raise ValueError(f"disk path {p} listed twice")

    def disks(self) -> tuple[DiskConfig, ...]:
        return tuple(DiskConfig(path=d.path, reserve_bytes=d.reserve_bytes, tier=tier)
                     for tier in Tier for d in getattr(self, tier.value))


class MoverConfig(Conf):
    enabled: bool = True
    interval_s: Timeout = 60.0
    io_budget_bps: Annotated[int, Meta(ge=1)] = 200_000_000  # bytes per second the mover may copy between tiers
    ssd_high_water: Annotated[float, Meta(ge=0.1, le=1.0)] = 0.90  # fraction of an SSD tier the mover fills at most


class PullThroughConfig(Conf):
    enabled: bool = False
    parent: str | None = None  # base URL of another appliance or the origin
    timeout_s: Timeout = 10.0  # connect / between-bytes timeout towards the parent
    wait_s: Annotated[float, Meta(ge=0)] = 2.0  # how long a request waits for its pull before the fast 404
    retry_after_s: Annotated[float, Meta(ge=0)] = 30.0  # a key whose pull failed is not pulled again before this
    key_file: Path | None = None  # this appliance's fill keys for the parent (`steering keys derive --pull-from`)

    def __post_init__(self) -> None:
        if self.enabled and not self.parent:
            raise invalid("parent", "required when pull_through.enabled is true")
        if self.enabled and self.key_file is None:
            raise invalid("key_file", "required when pull_through.enabled is true (this appliance's fill keys "
                          "for the parent: steering keys derive --pull-from PARENT)")


class SteeringLinkConfig(Conf):
    urls: tuple[HttpUrl, ...] = ()  # every steering replica; each gets every heartbeat
    report_interval_s: Timeout = 5.0


class OcaFile(Conf):
    """oca.toml as written."""

    appliance: ApplianceTable
    tokens: TokenConfig
    store: StoreConfig
    tiers: TiersTable
    http: HttpConfig = HttpConfig()
    admin: AdminConfig = AdminConfig()
    mover: MoverConfig = MoverConfig()
    pull_through: PullThroughConfig = PullThroughConfig()
    steering: SteeringLinkConfig = SteeringLinkConfig()
    bgp: BgpConfig | None = None  # oca.bgp.config
    tls: dict[str, Any] | None = None  # read by oca.tlsconf (its defaults come from [http])


class OcaConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What the appliance runs with (built by `parse`)."""

    appliance_id: str
    site: str
    egress_capacity_bps: int
    http: HttpConfig
    admin: AdminConfig
    tokens: TokenConfig
    store: StoreConfig
    disks: tuple[DiskConfig, ...]
    mover: MoverConfig
    pull_through: PullThroughConfig
    steering: SteeringLinkConfig
    bgp: BgpConfig | None  # [bgp]: sessions with the ISP's routers (oca.bgp); None: no BGP
    tls: TlsConfig | None  # [tls]: HTTPS listener (oca.tlsconf, oca/http/tls.py); None: plain HTTP only
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
    f = convert(OcaFile, mapping, base=base)
    return OcaConfig(
        appliance_id=f.appliance.id, site=f.appliance.site, egress_capacity_bps=f.appliance.egress_capacity_bps,
        http=_log_against(f.http, base), admin=f.admin, tokens=f.tokens, store=f.store, disks=f.tiers.disks(),
        mover=f.mover, pull_through=f.pull_through, steering=f.steering,
        bgp=f.bgp,
        tls=None if f.tls is None else parse_tls(f.tls, base, f.http.listen, f.http.header_timeout_s),
        source=source,
    )


def _log_against(http: HttpConfig, base: Path | None) -> HttpConfig:
    """A relative access-log path taken against the config file's folder."""
    log = http.access_log
    if not isinstance(log, Path) or log.is_absolute():
        return http
    if base is None:
        raise ConfigError("http.access_log: must be an absolute path")
    return replace(http, access_log=base / log)


def dev_config(directory: Path, port: int = 8080, workers: int = 1, sendfile: bool = True,
               admin_port: int = 0) -> OcaConfig:
    """`oca serve --dev DIR`: DIR is one SSD disk, state (key, index) under DIR/.oca."""
    directory = Path(directory).resolve()
    state = directory / ".oca"
    config = parse({
        "appliance": {"id": "dev", "site": "dev"},
        "http": {"listen": "127.0.0.1", "port": port, "workers": workers, "sendfile": sendfile},
        "admin": {"listen": "127.0.0.1", "port": admin_port},
        "tokens": {"key_file": str(state / "keys.toml")},
        "store": {"index": str(state / "index.db")},
        "tiers": {"ssd": [{"path": str(directory)}]},
        "mover": {"enabled": False},
    })
    return replace(config, dev=True)
