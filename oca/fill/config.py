"""The fill agent's typed config (`config/fill.example.toml`): its [agent], [window], [transfer], [origin]
and [serving] tables. `load(path)` reads TOML, `parse(mapping)` builds frozen dataclasses; errors name
the dotted key. Every table is optional.

The planner's policy is not here: `fill plan` reads it from its own config (config/fill-plan.example.toml,
fill.config). A [plan] table left in an appliance's fill.toml from before the split is accepted and
ignored, so an upgrade does not stop a fill run over it."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from contracts.tomlconf import ConfigError, Section, read_toml
from oca.fill.core.window import Window, parse_hhmm

__all__ = ["ConfigError", "WindowConfig", "TransferConfig", "OriginConfig", "ServingConfig", "AgentConfig",
           "FillConfig", "load", "parse", "parse_origin"]


@dataclass(frozen=True)
class WindowConfig:
    window: Window = field(default_factory=lambda: Window(120, 12 * 3600.0))
    timezone: str = ""  # IANA name ("Europe/Amsterdam"); "" = the system's local time


@dataclass(frozen=True)
class TransferConfig:
    rate_limit_bps: int = 1_200_000_000  # bits per second, all downloads together; 0 = no cap
    max_files: int = 4  # files downloading at once
    parts_per_file: int = 4  # parallel ranged GETs per file
    part_bytes: int = 16 << 20
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0  # between bytes
    max_attempts: int = 8  # host failures per file before it waits for the next run
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0


@dataclass(frozen=True)
class OriginConfig:
    url: str | None = None  # an HTTP origin (`origin serve`): GET <url>/<key> with a fill token
    location: str | None = None  # or s3://bucket[/prefix] (or a local directory), read directly
    endpoint_url: str | None = None  # S3 API endpoint (MinIO, Ceph RGW, moto); None: AWS
    region: str | None = None
    verify_catalog: bool = True  # refuse a manifest naming files the origin's catalog does not know


@dataclass(frozen=True)
class ServingConfig:
    nice: int = 10  # CPU niceness the agent runs at, at least (0..19); never raises its priority
    io_class: str = "best-effort"  # I/O priority: "best-effort" (lowest level), "idle" or "none"
    busy_fraction: float = 0.5  # serving egress / capacity above which fill slows down
    floor_fraction: float = 0.1  # share of the cap fill keeps at full serving load
    poll_s: float = 5.0  # how often the appliance's admin /v1/health is read
    admin_url: str | None = None  # default: from the appliance config's [admin] (if its port is fixed)


@dataclass(frozen=True)
class AgentConfig:
    state_dir: Path | None = None  # default: <directory of store.index>/fill
    steering: tuple[str, ...] = ()  # steering replicas' base URLs, tried in order


@dataclass(frozen=True)
class FillConfig:
    agent: AgentConfig = field(default_factory=AgentConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    origin: OriginConfig = field(default_factory=OriginConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)


def load(path: Path) -> FillConfig:
    path = Path(path).resolve()
    return parse(read_toml(path), base=path.parent)


def parse(mapping: Mapping[str, Any], base: Path | None = None) -> FillConfig:
    top = Section(mapping)
    cfg = FillConfig(
        agent=_agent(top.section("agent", {}), base), window=_window(top.section("window", {})),
        transfer=_transfer(top.section("transfer", {})), origin=parse_origin(top.section("origin", {})),
        serving=_serving(top.section("serving", {})),
    )
    top.raw("plan", {})  # the planner's table before the split (now in fill-plan.toml): ignored
    top.done()
    return cfg


def _agent(s: Section, base: Path | None) -> AgentConfig:
    steering = s.str_list("steering", [])
    for i, url in enumerate(steering):
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{s.key('steering')}[{i}]: must be an http(s) URL")
    cfg = AgentConfig(state_dir=s.path("state_dir", None, base=base), steering=tuple(u.rstrip("/") for u in steering))
    s.done()
    return cfg


def _window(s: Section) -> WindowConfig:
    try:
        start = parse_hhmm(s.str("start", "02:00"))
    except ValueError as exc:
        raise ConfigError(f"{s.key('start')}: {exc}") from None
    hours = s.float("hours", 12.0, min=0.01, max=24.0)
    shift = s.int("shift_minutes", 0, min=-720, max=720)
    tz = s.str("timezone", "")
    if tz:
        try:
            from zoneinfo import ZoneInfo
            ZoneInfo(tz)
        except Exception:
            raise ConfigError(f"{s.key('timezone')}: unknown time zone {tz!r}") from None
    s.done()
    return WindowConfig(Window(start, hours * 3600.0, shift), tz)


def _transfer(s: Section) -> TransferConfig:
    d = TransferConfig()
    cfg = TransferConfig(
        rate_limit_bps=s.int("rate_limit_bps", d.rate_limit_bps, min=0),
        max_files=s.int("max_files", d.max_files, min=1, max=256),
        parts_per_file=s.int("parts_per_file", d.parts_per_file, min=1, max=64),
        part_bytes=s.int("part_bytes", d.part_bytes, min=1 << 16),
        connect_timeout_s=s.float("connect_timeout_s", d.connect_timeout_s, min=0.1),
        read_timeout_s=s.float("read_timeout_s", d.read_timeout_s, min=0.1),
        max_attempts=s.int("max_attempts", d.max_attempts, min=1),
        backoff_base_s=s.float("backoff_base_s", d.backoff_base_s, min=0.0),
        backoff_cap_s=s.float("backoff_cap_s", d.backoff_cap_s, min=0.0),
    )
    s.done()
    return cfg


def parse_origin(s: Section) -> OriginConfig:
    cfg = OriginConfig(url=s.http_url("url"), location=s.str("location", None),
                       endpoint_url=s.http_url("endpoint_url"), region=s.str("region", None),
                       verify_catalog=s.bool("verify_catalog", True))
    s.done()
    if cfg.url and cfg.location:
        raise ConfigError(f"{s.key('location')}: give either url or location, not both")
    return cfg


def _serving(s: Section) -> ServingConfig:
    d = ServingConfig()
    cfg = ServingConfig(
        nice=s.int("nice", d.nice, min=0, max=19),
        io_class=s.str("io_class", d.io_class, choices=("best-effort", "idle", "none")),
        busy_fraction=s.float("busy_fraction", d.busy_fraction, min=0.0, max=1.0),
        floor_fraction=s.float("floor_fraction", d.floor_fraction, min=0.0, max=1.0),
        poll_s=s.float("poll_s", d.poll_s, min=0.1),
        admin_url=s.http_url("admin_url"),
    )
    s.done()
    return cfg


def local_zone(tz: str) -> dt.tzinfo | None:
    if not tz:
        return None
    from zoneinfo import ZoneInfo
    return ZoneInfo(tz)
