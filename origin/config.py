"""The origin's typed config: `load(path)` reads TOML, `parse(mapping)` checks it against `OriginFile`
(one msgspec Struct per table, contracts.structconf; errors name the dotted key) and builds the
`OriginConfig` the commands run with. Every command names its origin the same way — a local directory
or `s3://bucket/prefix` (+ endpoint_url for MinIO, Ceph RGW, ...) — from `[origin]` or `--origin`
(`parse_location`). See config/origin.example.toml for every setting."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import msgspec
from msgspec import Meta
from msgspec.structs import replace

from contracts.structconf import Conf, ConfigError, convert, invalid, read_toml
from contracts.tlsserve import TlsSettings
from contracts.webguard import GuardConfig
from origin.core.errors import UsageError
from origin.core.ffargs import PRESETS
from origin.core.ladder import DEFAULT_LADDER, Codec, EncodeSettings, VideoRung, validate_ladder

__all__ = ["ConfigError", "Location", "S3Config", "RungTable", "EncodeConfig", "ServeConfig", "OriginTable",
           "OriginFile", "OriginConfig", "load", "parse", "parse_location"]

Timeout = Annotated[float, Meta(ge=0.1)]

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Location:
    """Where the origin is: a local directory, or a bucket and key prefix on an S3 API."""

    path: Path | None = None
    bucket: str | None = None
    prefix: str = ""  # without leading or trailing slash
    endpoint_url: str | None = None
    region: str | None = None

    @property
    def is_s3(self) -> bool:
        return self.bucket is not None

    def __str__(self) -> str:
        if self.is_s3:
            where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
            return f"{where} at {self.endpoint_url}" if self.endpoint_url else where
        return str(self.path)


class S3Config(Conf):
    retry_mode: Literal["standard", "adaptive"] = "adaptive"  # botocore's; "adaptive": client-side rate limiting
    max_attempts: Annotated[int, Meta(ge=1, le=50)] = 10  # per request, retrying throttling (503 SlowDown) and 5xx
    multipart_threshold_bytes: Annotated[int, Meta(ge=5 << 20)] = 16 << 20
    multipart_chunk_bytes: Annotated[int, Meta(ge=5 << 20, le=5 << 30)] = 16 << 20
    max_concurrency: Annotated[int, Meta(ge=1, le=256)] = 10  # parts and files in flight at once
    connect_timeout_s: Timeout = 10.0
    read_timeout_s: Timeout = 60.0
    addressing_style: Literal["auto", "path", "virtual"] = "auto"


class RungTable(Conf):
    """One [[encode.ladder]] table (a VideoRung)."""

    name: str
    height: Annotated[int, Meta(ge=16, le=4320)]
    bitrate_bps: Annotated[int, Meta(ge=10_000, le=200_000_000)]
    codec: Codec = VideoRung.codec

    def __post_init__(self) -> None:
        if self.height % 2:
            raise invalid("height", "must be even (4:2:0 video)")


class EncodeConfig(Conf):
    """[encode]: the tools, and flat beside them the EncodeSettings (origin.core.ladder holds their
    defaults) and the ladder (default: DEFAULT_LADDER)."""

    ffmpeg: str = "ffmpeg"
    ffprobe: str = "ffprobe"
    threads: Annotated[int, Meta(ge=0, le=256)] = 0  # 0: ffmpeg decides
    work_dir: Path | None = None  # encodes kept here until uploaded (resume); None: the temp dir
    preset: Literal[PRESETS] = EncodeSettings.preset
    segment_s: Annotated[float, Meta(ge=1.0, le=20.0)] = EncodeSettings.segment_s
    audio_bitrate_bps: Annotated[int, Meta(ge=16_000, le=640_000)] = EncodeSettings.audio_bitrate_bps
    audio_channels: Annotated[int, Meta(ge=1, le=8)] = EncodeSettings.audio_channels
    allow_upscale: bool = EncodeSettings.allow_upscale
    poster_height: Annotated[int, Meta(ge=16, le=2160)] = EncodeSettings.poster_height
    rungs: tuple[RungTable, ...] | None = msgspec.field(default=None, name="ladder")

    def __post_init__(self) -> None:
        try:
            validate_ladder(self.ladder)
        except UsageError as exc:
            raise invalid("ladder", str(exc)) from None

    @property
    def settings(self) -> EncodeSettings:
        return EncodeSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(EncodeSettings)})

    @property
    def ladder(self) -> tuple[VideoRung, ...]:
        if self.rungs is None:
            return DEFAULT_LADDER
        return tuple(VideoRung(r.name, r.height, r.bitrate_bps, r.codec) for r in self.rungs)


class ServeConfig(GuardConfig, kw_only=True):
    """[serve]; the guard's keys (contracts.webguard: connection timeouts and cap, no route reads a
    body) sit flat beside these."""

    listen: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8070
    key_file: Path | None = None  # fill-token keys (contracts.keys); required to serve
    catalog_public: bool = False  # /v1/titles without a token (the catalog is not secret; files are)
    drain_timeout_s: Annotated[float, Meta(ge=0)] = 10.0
    sendfile: bool = True  # file bodies by sendfile (no copy through Python); false: pread + write
    # a body is sent in steps of this many bytes (a sendfile call, or one read)
    chunk_bytes: Annotated[int, Meta(ge=4096, le=64 << 20)] = 1 << 20
    cache_control: str = "public, max-age=31536000, immutable"  # keys are versioned by content
    # the control store (where `fill plan` writes manifests and steering the withdrawal log: a directory
    # or s3://bucket/prefix): set, files of a withdrawn title or version are refused with 410
    control_store: str | None = None
    control_store_endpoint_url: str | None = None
    withdrawals_poll_s: Annotated[float, Meta(ge=1, le=3600)] = 30.0

    @property
    def guard(self) -> GuardConfig:
        return self


class OriginTable(Conf):
    """[origin]: a local directory or s3://bucket[/prefix], made a Location by parse_location."""

    location: str
    endpoint_url: str | None = None
    region: str | None = None


class _Tables(Conf):
    """What the file and the config have in common."""

    s3: S3Config = S3Config()
    encode: EncodeConfig = EncodeConfig()
    serve: ServeConfig = ServeConfig()
    tls: TlsSettings | None = None  # `origin serve` on HTTPS (contracts.tlsserve); none: plain HTTP


class OriginFile(_Tables):
    """origin.toml as written: every table optional."""

    origin: OriginTable | None = None


class OriginConfig(_Tables):
    """What the commands run with: the file's tables, its [origin] as a Location (or --origin's)."""

    location: Location | None = None

    def with_location(self, location: Location) -> "OriginConfig":
        return replace(self, location=location)


def load(path: Path) -> OriginConfig:
    path = Path(path).resolve()
    return parse(read_toml(path), base=path.parent)


def parse(mapping: Mapping[str, Any], base: Path | None = None) -> OriginConfig:
    f = convert(OriginFile, mapping, base=base)
    o = f.origin
    location = None if o is None else parse_location(o.location, o.endpoint_url, o.region, base,
                                                     where="origin.location")
    return OriginConfig(s3=f.s3, encode=f.encode, serve=f.serve, tls=f.tls, location=location)


def parse_location(raw: str, endpoint_url: str | None = None, region: str | None = None,
                   base: Path | None = None, where: str = "--origin") -> Location:
    """`/path`, `relative/path` (against `base`, else the working directory) or `s3://bucket[/prefix]`."""
    if not raw:
        raise ConfigError(f"{where}: empty")
    if raw.startswith("s3://"):
        bucket, _, prefix = raw[len("s3://"):].partition("/")
        prefix = prefix.strip("/")
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise ConfigError(f"{where}: {bucket!r} is not a valid S3 bucket name")
        if prefix and not all(_PREFIX_SEGMENT.fullmatch(s) for s in prefix.split("/")):
            raise ConfigError(f"{where}: key prefix {prefix!r} must be segments of [A-Za-z0-9_.-]")
        if endpoint_url is not None and not re.match(r"https?://[^/]+", endpoint_url):
            raise ConfigError(f"{where}: endpoint URL {endpoint_url!r} must be http(s)://host[:port]")
        return Location(bucket=bucket, prefix=prefix, endpoint_url=endpoint_url, region=region)
    if "://" in raw:
        raise ConfigError(f"{where}: {raw!r}: only a local path or s3://bucket/prefix")
    if endpoint_url is not None:
        raise ConfigError(f"{where}: endpoint_url only applies to an s3:// origin")
    path = Path(raw).expanduser()
    return Location(path=(path if path.is_absolute() else (base or Path.cwd()) / path).resolve())
