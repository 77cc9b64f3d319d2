"""`fill plan`'s typed config (config/fill-plan.example.toml): where the planner gathers its inputs
(steering and playback replicas, the origin's catalog), where it writes the manifests, its keys, the
content regions and the placement policy. `load(path)` reads TOML, `parse(mapping)` builds frozen
dataclasses; errors name the dotted key; relative paths are taken against the config file's folder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from contracts.tomlconf import ConfigError, Section, read_toml
from contracts.wirefields import IDENT
from fill.core.model import OriginRef, PlanPolicy

__all__ = ["ConfigError", "Replicas", "StoreConfig", "PlannerConfig", "PlanConfig", "load", "parse", "parse_plan"]


@dataclass(frozen=True)
class Replicas:
    urls: tuple[str, ...] = ()
    token_file: Path | None = None  # a bearer token (contracts.callers) with the roles the planner needs


@dataclass(frozen=True)
class StoreConfig:
    location: str  # a local directory or s3://bucket[/prefix]
    endpoint_url: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class PlannerConfig:
    key_file: Path  # the fleet's master keys: manifests are signed and credentials minted with keys derived from it
    state_dir: Path | None = None  # the run lock (one planner at a time on this host) and fill-plan.prom
    request_timeout_s: float = 30.0  # per replica request
    max_response_bytes: int = 1 << 30  # a fleet state of 10^5 keys per appliance is a few MB per appliance
    max_catalog_skip_fraction: float = 0.5  # more broken catalog entries than this: the run fails
    keep_plans: int = 5  # plan versions kept in the store (older ones are deleted after a switch)


@dataclass(frozen=True)
class PlanConfig:
    planner: PlannerConfig
    steering: Replicas  # fleet state (role "fleet") and demand (role "demand")
    playback: Replicas  # demand (role "demand")
    origin: StoreConfig  # the catalog
    manifests: StoreConfig  # where fill-manifests/ is written (steering's [fill] origin reads it)
    regions: Mapping[str, str] = field(default_factory=dict)  # site -> content region; default: the site
    policy: PlanPolicy = field(default_factory=PlanPolicy)
    source: Path | None = None


def load(path: Path) -> PlanConfig:
    path = Path(path).resolve()
    return parse(read_toml(path), base=path.parent, source=path)


def parse(mapping: Mapping[str, Any], base: Path | None = None, source: Path | None = None) -> PlanConfig:
    top = Section(mapping)
    origin = _store(top.section("origin"), base)
    manifests = _store(top.section("manifests"), base, default=origin) if top.has("manifests") else origin
    steering = _replicas(top.section("steering"), base)
    if not steering.urls:
        raise ConfigError("steering.replicas: at least one steering replica is required (the fleet state)")
    playback = _replicas(top.section("playback", {}), base, default_token=steering.token_file)
    cfg = PlanConfig(planner=_planner(top.section("planner"), base), steering=steering, playback=playback,
                     origin=origin, manifests=manifests, regions=_regions(top.raw("regions", {})),
                     policy=parse_plan(top.section("plan", {})), source=source)
    top.done()
    return cfg


def _replicas(s: Section, base: Path | None, default_token: Path | None = None) -> Replicas:
    urls = s.str_list("replicas", [])
    for i, url in enumerate(urls):
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{s.key('replicas')}[{i}]: must be an http(s) URL")
    if len(set(urls)) != len(urls):
        raise ConfigError(f"{s.key('replicas')}: a replica is listed twice")
    cfg = Replicas(tuple(u.rstrip("/") for u in urls), s.path("token_file", default_token, base=base))
    s.done()
    return cfg


def _store(s: Section, base: Path | None, default: StoreConfig | None = None) -> StoreConfig:
    """A location; [manifests] defaults to the origin's, and an s3:// one takes the origin's endpoint
    and region unless it names its own."""
    raw = s.str("location") if default is None else s.str("location", default.location)
    if not raw:
        raise ConfigError(f"{s.key('location')}: empty")
    is_s3 = raw.startswith("s3://")
    if not is_s3:
        if "://" in raw:
            raise ConfigError(f"{s.key('location')}: {raw!r}: only a local path or s3://bucket[/prefix]")
        path = Path(raw).expanduser()
        raw = str(path if path.is_absolute() or base is None else (base / path).resolve())
    inherit = default is not None and is_s3 and default.location.startswith("s3://")
    inherited = default if inherit and default is not None else StoreConfig(raw)
    cfg = StoreConfig(raw, s.http_url("endpoint_url") or inherited.endpoint_url, s.str("region", inherited.region))
    s.done()
    if cfg.endpoint_url is not None and not is_s3:
        raise ConfigError(f"{s.key('endpoint_url')}: only for an s3:// location")
    return cfg


def _planner(s: Section, base: Path | None) -> PlannerConfig:
    d = PlannerConfig(key_file=Path("/"))
    cfg = PlannerConfig(
        key_file=s.path("key_file", base=base),
        state_dir=s.path("state_dir", None, base=base),
        request_timeout_s=s.float("request_timeout_s", d.request_timeout_s, min=0.1),
        max_response_bytes=s.int("max_response_bytes", d.max_response_bytes, min=1 << 16),
        max_catalog_skip_fraction=s.float("max_catalog_skip_fraction", d.max_catalog_skip_fraction, min=0.0,
                                          max=1.0),
        keep_plans=s.int("keep_plans", d.keep_plans, min=2, max=1000),
    )
    s.done()
    return cfg


def _regions(raw: Any) -> dict[str, str]:
    """[regions]: site id = content region id (clusters of one region share popularity and demand)."""
    if not isinstance(raw, Mapping):
        raise ConfigError("regions: must be a table of site = \"region\"")
    out = {}
    for site, region in raw.items():
        if not isinstance(region, str) or not IDENT.fullmatch(site) or not IDENT.fullmatch(region):
            raise ConfigError(f"regions.{site}: site and region ids are 1-64 of [A-Za-z0-9_.-]")
        out[site] = region
    return out


def parse_plan(s: Section) -> PlanPolicy:
    """The placement policy ([plan]): copies, launches, capacity, tier fill, how manifests name the origin."""
    d = PlanPolicy()
    raw = s.raw("copy_thresholds", list(d.copy_thresholds))
    if not isinstance(raw, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0
                                            for x in raw):
        raise ConfigError(f"{s.key('copy_thresholds')}: must be a list of positive numbers")
    if list(raw) != sorted(raw):
        raise ConfigError(f"{s.key('copy_thresholds')}: must be ascending")
    origin_url, origin_s3 = s.http_url("origin_url"), s.str("origin_s3", None)
    bucket, prefix = None, ""
    if origin_s3 is not None:
        if not origin_s3.startswith("s3://") or not origin_s3[5:].split("/", 1)[0]:
            raise ConfigError(f"{s.key('origin_s3')}: must be s3://bucket[/prefix]")
        bucket, _, prefix = origin_s3[5:].partition("/")
    policy = PlanPolicy(
        copy_thresholds=tuple(float(x) for x in raw),
        min_copies=s.int("min_copies", d.min_copies, min=0, max=64),
        predicted_popularity=s.float("predicted_popularity", d.predicted_popularity, min=0.0),
        learn_days=s.int("learn_days", d.learn_days, min=0, max=365),
        learn_factor=s.float("learn_factor", d.learn_factor, min=0.001),
        pre_release_days=s.int("pre_release_days", d.pre_release_days, min=0, max=365),
        pre_release_weight=s.float("pre_release_weight", d.pre_release_weight, min=0.0, max=1.0),
        post_release_days=s.int("post_release_days", d.post_release_days, min=0, max=365),
        capacity_fraction=s.float("capacity_fraction", d.capacity_fraction, min=0.01, max=1.0),
        reactive_share=s.float("reactive_share", d.reactive_share, min=0.0, max=0.99),
        include_cold=s.bool("include_cold", d.include_cold),
        remote_peers=s.bool("remote_peers", d.remote_peers),
        hop_limit=s.int("hop_limit", d.hop_limit, min=1, max=8),
        escalate_after_s=s.float("escalate_after_s", d.escalate_after_s, min=1, max=86400),
        origin=OriginRef(origin_url, bucket, prefix.strip("/")),
    )
    s.done()
    if origin_url and origin_s3:
        raise ConfigError(f"{s.key('origin_s3')}: give either origin_url or origin_s3, not both")
    return policy
