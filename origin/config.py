"""The origin's typed config: `load(path)` reads TOML, `parse(mapping)` builds frozen dataclasses and
names the dotted key of any error. Every command names its origin the same way — a local directory or
`s3://bucket/prefix` (+ endpoint_url for MinIO, Ceph RGW, ...) — from `[origin]` or `--origin`.
See config/origin.example.toml for every setting."""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from contracts.tomlconf import ConfigError, Section, read_toml
from contracts.webguard import GuardConfig, parse_guard
from origin.core.errors import UsageError
from origin.core.ffargs import PRESETS
from origin.core.ladder import DEFAULT_LADDER, Codec, EncodeSettings, VideoRung, validate_ladder

__all__ = ["ConfigError", "Location", "S3Config", "EncodeConfig", "ServeConfig", "OriginConfig",
           "load", "parse", "parse_location"]

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


@dataclass(frozen=True)
class S3Config:
    retry_mode: str = "adaptive"  # botocore: "standard" or "adaptive" (client-side rate limiting)
    max_attempts: int = 10  # per request, retrying throttling (503 SlowDown) and 5xx with backoff
    multipart_threshold_bytes: int = 16 << 20
    multipart_chunk_bytes: int = 16 << 20
    max_concurrency: int = 10  # parts and files in flight at once
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    addressing_style: str = "auto"


@dataclass(frozen=True)
class EncodeConfig:
    ffmpeg: str = "ffmpeg"
    ffprobe: str = "ffprobe"
    threads: int = 0  # 0: ffmpeg decides
    work_dir: Path | None = None  # encodes kept here until uploaded (resume); None: the temp dir
    settings: EncodeSettings = field(default_factory=EncodeSettings)
    ladder: tuple[VideoRung, ...] = DEFAULT_LADDER


@dataclass(frozen=True)
class ServeConfig:
    listen: str = "127.0.0.1"
    port: int = 8070
    key_file: Path | None = None  # fill-token keys (contracts.keys); required to serve
    catalog_public: bool = False  # /v1/titles without a token (the catalog is not secret; files are)
    drain_timeout_s: float = 10.0
    sendfile: bool = True  # file bodies by sendfile (no copy through Python); false: pread + write
    chunk_bytes: int = 1 << 20  # a body is sent in steps of this many bytes (a sendfile call, or one read)
    cache_control: str = "public, max-age=31536000, immutable"  # keys are versioned by content
    # abuse shedding (contracts.webguard): connection timeouts and cap (no route reads a body)
    guard: GuardConfig = field(default_factory=GuardConfig)


@dataclass(frozen=True)
class OriginConfig:
    location: Location | None = None
    s3: S3Config = field(default_factory=S3Config)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    source: Path | None = None

    def with_location(self, location: Location) -> "OriginConfig":
        return replace(self, location=location)


def load(path: Path) -> OriginConfig:
    path = Path(path).resolve()
    return parse(read_toml(path), base=path.parent, source=path)


def parse(mapping: Mapping[str, Any], base: Path | None = None, source: Path | None = None) -> OriginConfig:
    top = Section(mapping)
    config = OriginConfig(
        location=_location(top.section("origin"), base) if top.has("origin") else None,
        s3=_s3(top.section("s3", {})),
        encode=_encode(top.section("encode", {}), base),
        serve=_serve(top.section("serve", {}), base),
        source=source,
    )
    top.done()
    return config


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


def _location(s: Section, base: Path | None) -> Location:
    location = parse_location(s.str("location"), s.str("endpoint_url", None), s.str("region", None), base,
                              where=s.key("location"))
    s.done()
    return location


def _s3(s: Section) -> S3Config:
    d = S3Config()
    cfg = S3Config(
        retry_mode=s.str("retry_mode", d.retry_mode, choices=("standard", "adaptive")),
        max_attempts=s.int("max_attempts", d.max_attempts, min=1, max=50),
        multipart_threshold_bytes=s.int("multipart_threshold_bytes", d.multipart_threshold_bytes, min=5 << 20),
        multipart_chunk_bytes=s.int("multipart_chunk_bytes", d.multipart_chunk_bytes, min=5 << 20, max=5 << 30),
        max_concurrency=s.int("max_concurrency", d.max_concurrency, min=1, max=256),
        connect_timeout_s=s.float("connect_timeout_s", d.connect_timeout_s, min=0.1),
        read_timeout_s=s.float("read_timeout_s", d.read_timeout_s, min=0.1),
        addressing_style=s.str("addressing_style", d.addressing_style, choices=("auto", "path", "virtual")),
    )
    s.done()
    return cfg


def _encode(s: Section, base: Path | None) -> EncodeConfig:
    d, ds = EncodeConfig(), EncodeSettings()
    settings = EncodeSettings(
        preset=s.str("preset", ds.preset, choices=PRESETS),
        segment_s=s.float("segment_s", ds.segment_s, min=1.0, max=20.0),
        audio_bitrate_bps=s.int("audio_bitrate_bps", ds.audio_bitrate_bps, min=16_000, max=640_000),
        audio_channels=s.int("audio_channels", ds.audio_channels, min=1, max=8),
        allow_upscale=s.bool("allow_upscale", ds.allow_upscale),
        poster_height=s.int("poster_height", ds.poster_height, min=16, max=2160),
    )
    cfg = EncodeConfig(
        ffmpeg=s.str("ffmpeg", d.ffmpeg),
        ffprobe=s.str("ffprobe", d.ffprobe),
        threads=s.int("threads", d.threads, min=0, max=256),
        work_dir=s.path("work_dir", None, base=base),
        settings=settings,
        ladder=_ladder(s.sections("ladder"), s.key("ladder")) if s.has("ladder") else d.ladder,
    )
    s.done()
    return cfg


def _ladder(rungs: list[Section], where: str) -> tuple[VideoRung, ...]:
    out = []
    for rung in rungs:
        out.append(VideoRung(
            name=rung.str("name"),
            height=rung.int("height", min=16, max=4320),
            bitrate_bps=rung.int("bitrate_bps", min=10_000, max=200_000_000),
            codec=Codec(rung.str("codec", "h264", choices=tuple(c.value for c in Codec))),
        ))
        if out[-1].height % 2:
            raise ConfigError(f"{rung.key('height')}: must be even (4:2:0 video)")
        rung.done()
    try:
        return validate_ladder(tuple(out))
    except UsageError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _serve(s: Section, base: Path | None) -> ServeConfig:
    d = ServeConfig()
    cfg = ServeConfig(
        listen=s.str("listen", d.listen),
        port=s.int("port", d.port, min=0, max=65535),
        key_file=s.path("key_file", None, base=base),
        catalog_public=s.bool("catalog_public", d.catalog_public),
        drain_timeout_s=s.float("drain_timeout_s", d.drain_timeout_s, min=0),
        sendfile=s.bool("sendfile", d.sendfile),
        chunk_bytes=s.int("chunk_bytes", d.chunk_bytes, min=4096, max=64 << 20),
        cache_control=s.str("cache_control", d.cache_control),
        guard=parse_guard(s),
    )
    s.done()
    return cfg
