"""The fill agent's typed config (`config/fill.example.toml`): its [agent], [window], [transfer], [origin]
and [serving] tables, one msgspec Struct each (contracts.structconf). `load(path)` reads TOML,
`parse(mapping)` checks and builds it; errors name the dotted key. Every table is optional.

The planner's policy is not here: `fill plan` reads it from its own config (config/fill-plan.example.toml,
fill.config). A [plan] table left in an appliance's fill.toml from before the split is accepted and
ignored, so an upgrade does not stop a fill run over it."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from msgspec import Meta

from contracts.structconf import Conf, ConfigError, HttpUrl, convert, invalid, read_toml, without_slash
from oca.fill.core.window import Window, parse_hhmm

__all__ = ["ConfigError", "WindowConfig", "TransferConfig", "OriginConfig", "ServingConfig", "AgentConfig",
           "FillConfig", "load", "parse"]

Timeout = Annotated[float, Meta(ge=0.1)]
Fraction = Annotated[float, Meta(ge=0.0, le=1.0)]


def local_zone(tz: str) -> dt.tzinfo | None:
    if not tz:
        return None
    from zoneinfo import ZoneInfo
    return ZoneInfo(tz)


class WindowConfig(Conf):
    """[window]: the daily fill window, local wall-clock time (`window`)."""

    start: str = "02:00"  # HH:MM
    hours: Annotated[float, Meta(ge=0.01, le=24.0)] = 12.0
    shift_minutes: Annotated[int, Meta(ge=-720, le=720)] = 0  # this site's shift of the start
    timezone: str = ""  # IANA name ("Europe/Amsterdam"); "" = the system's local time

    def __post_init__(self) -> None:
        try:
            parse_hhmm(self.start)
        except ValueError as exc:
            raise invalid("start", str(exc)) from None
        try:
            local_zone(self.timezone)
        except Exception:
            raise invalid("timezone", f"unknown time zone {self.timezone!r}") from None

    @property
    def window(self) -> Window:
        return Window(parse_hhmm(self.start), self.hours * 3600.0, self.shift_minutes)


class TransferConfig(Conf):
    rate_limit_bps: Annotated[int, Meta(ge=0)] = 1_200_000_000  # bits per second, all downloads together; 0 = no cap
    max_files: Annotated[int, Meta(ge=1, le=256)] = 4  # files downloading at once
    parts_per_file: Annotated[int, Meta(ge=1, le=64)] = 4  # parallel ranged GETs per file
    part_bytes: Annotated[int, Meta(ge=1 << 16)] = 16 << 20
    connect_timeout_s: Timeout = 10.0
    read_timeout_s: Timeout = 30.0  # between bytes
    max_attempts: Annotated[int, Meta(ge=1)] = 8  # host failures per file before it waits for the next run
    backoff_base_s: Annotated[float, Meta(ge=0.0)] = 1.0
    backoff_cap_s: Annotated[float, Meta(ge=0.0)] = 60.0


class OriginConfig(Conf):
    url: HttpUrl | None = None  # an HTTP origin (`origin serve`): GET <url>/<key> with a fill token
    location: str | None = None  # or s3://bucket[/prefix] (or a local directory), read directly
    endpoint_url: HttpUrl | None = None  # S3 API endpoint (MinIO, Ceph RGW, moto); None: AWS
    region: str | None = None
    verify_catalog: bool = True  # refuse a manifest naming files the origin's catalog does not know

    def __post_init__(self) -> None:
        without_slash(self, "url", "endpoint_url")
        if self.url and self.location:
            raise invalid("location", "give either url or location, not both")


class ServingConfig(Conf):
    nice: Annotated[int, Meta(ge=0, le=19)] = 10  # CPU niceness the agent runs at, at least; never raises its priority
    io_class: Literal["best-effort", "idle", "none"] = "best-effort"  # I/O priority ("best-effort": lowest level)
    busy_fraction: Fraction = 0.5  # serving egress / capacity above which fill slows down
    floor_fraction: Fraction = 0.1  # share of the cap fill keeps at full serving load
    poll_s: Timeout = 5.0  # how often the appliance's admin /v1/health is read
    admin_url: HttpUrl | None = None  # default: from the appliance config's [admin] (if its port is fixed)

    def __post_init__(self) -> None:
        without_slash(self, "admin_url")


class AgentConfig(Conf):
    state_dir: Path | None = None  # default: <directory of store.index>/fill
    steering: tuple[HttpUrl, ...] = ()  # steering replicas' base URLs, tried in order

    def __post_init__(self) -> None:
        without_slash(self, "steering")


class FillConfig(Conf):
    agent: AgentConfig = AgentConfig()
    window: WindowConfig = WindowConfig()
    transfer: TransferConfig = TransferConfig()
    origin: OriginConfig = OriginConfig()
    serving: ServingConfig = ServingConfig()


def load(path: Path) -> FillConfig:
    path = Path(path).resolve()
    return parse(read_toml(path), base=path.parent)


def parse(mapping: Mapping[str, Any], base: Path | None = None) -> FillConfig:
    if isinstance(mapping, Mapping) and "plan" in mapping:  # the planner's table before the split: ignored
        mapping = {k: v for k, v in mapping.items() if k != "plan"}
    return convert(FillConfig, mapping, base=base)
