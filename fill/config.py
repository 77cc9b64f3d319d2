"""`fill plan`'s typed config (config/fill-plan.example.toml): where the planner gathers its inputs
(steering and playback replicas, the origin's catalog), where it writes the manifests, its keys, the
content regions and the placement policy. `load(path)` reads TOML; `parse(mapping)` checks it against
`PlanFile` (one msgspec Struct per table, contracts.structconf; errors name the dotted key) and joins the
tables into the `PlanConfig` the job runs with: [manifests] beside [origin] by default, [playback]'s
token steering's, [plan] a PlanPolicy. Relative paths are taken against the config file's folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Mapping

import msgspec
from msgspec import Meta
from msgspec.structs import asdict, force_setattr, replace

from contracts.structconf import Conf, ConfigError, HttpUrl, convert, invalid, read_toml, without_slash
from contracts.ids import IDENT
from fill.core.model import OriginRef, PlanPolicy

__all__ = ["ConfigError", "Replicas", "StoreConfig", "PlannerConfig", "PolicyTable", "PlanFile", "PlanConfig",
           "load", "parse"]

Days = Annotated[int, Meta(ge=0, le=365)]


class Replicas(Conf):
    """[steering] / [playback]: the replicas asked, and the bearer token (contracts.callers) shown them."""

    urls: tuple[HttpUrl, ...] = msgspec.field(default=(), name="replicas")
    token_file: Path | None = None  # [playback]'s default: [steering]'s

    def __post_init__(self) -> None:
        without_slash(self, "urls")
        if len(set(self.urls)) != len(self.urls):
            raise invalid("replicas", "a replica is listed twice")


class StoreConfig(Conf):
    """[origin] / [manifests]: a local directory or s3://bucket[/prefix] (and the S3 API's endpoint and region)."""

    location: str
    endpoint_url: HttpUrl | None = None
    region: str | None = None

    @property
    def is_s3(self) -> bool:
        return self.location.startswith("s3://")

    def __post_init__(self) -> None:
        if not self.location:
            raise invalid("location", "empty")
        if not self.is_s3:
            if "://" in self.location:
                raise invalid("location", f"{self.location!r}: only a local path or s3://bucket[/prefix]")
            force_setattr(self, "location", str(Path(self.location).expanduser()))
        without_slash(self, "endpoint_url")
        if self.endpoint_url is not None and not self.is_s3:
            raise invalid("endpoint_url", "only for an s3:// location")


class PlannerConfig(Conf):
    key_file: Path  # the fleet's master keys: manifests are signed and credentials minted with keys derived from it
    state_dir: Path | None = None  # the run lock (one planner at a time on this host) and fill-plan.prom
    request_timeout_s: Annotated[float, Meta(ge=0.1)] = 30.0  # per replica request
    # a fleet state of 10^5 keys per appliance is a few MB per appliance
    max_response_bytes: Annotated[int, Meta(ge=1 << 16)] = 1 << 30
    max_catalog_skip_fraction: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.5  # more broken entries: the run fails
    keep_plans: Annotated[int, Meta(ge=2, le=1000)] = 5  # plan versions kept in the store (older ones are deleted)


class PolicyTable(Conf):
    """[plan]: the placement policy (fill.core.model.PlanPolicy, which documents each setting and holds
    its default), and how manifests name the origin: origin_url or origin_s3."""

    copy_thresholds: tuple[Annotated[float, Meta(gt=0)], ...] = PlanPolicy.copy_thresholds
    min_copies: Annotated[int, Meta(ge=0, le=64)] = PlanPolicy.min_copies
    predicted_popularity: Annotated[float, Meta(ge=0.0)] = PlanPolicy.predicted_popularity
    learn_days: Days = PlanPolicy.learn_days
    learn_factor: Annotated[float, Meta(ge=0.001)] = PlanPolicy.learn_factor
    pre_release_days: Days = PlanPolicy.pre_release_days
    pre_release_weight: Annotated[float, Meta(ge=0.0, le=1.0)] = PlanPolicy.pre_release_weight
    post_release_days: Days = PlanPolicy.post_release_days
    capacity_fraction: Annotated[float, Meta(ge=0.01, le=1.0)] = PlanPolicy.capacity_fraction
    reactive_share: Annotated[float, Meta(ge=0.0, le=0.99)] = PlanPolicy.reactive_share
    include_cold: bool = PlanPolicy.include_cold
    remote_peers: bool = PlanPolicy.remote_peers
    hop_limit: Annotated[int, Meta(ge=1, le=8)] = PlanPolicy.hop_limit
    escalate_after_s: Annotated[float, Meta(ge=1, le=86400)] = PlanPolicy.escalate_after_s
    origin_url: HttpUrl | None = None
    origin_s3: str | None = None  # s3://bucket[/prefix]

    def __post_init__(self) -> None:
        if list(self.copy_thresholds) != sorted(self.copy_thresholds):
            raise invalid("copy_thresholds", "must be ascending")
        without_slash(self, "origin_url")
        s3 = self.origin_s3
        if s3 is not None and not (s3.startswith("s3://") and s3[len("s3://"):].split("/", 1)[0]):
            raise invalid("origin_s3", "must be s3://bucket[/prefix]")
        if self.origin_url and self.origin_s3:
            raise invalid("origin_s3", "give either origin_url or origin_s3, not both")

    def policy(self) -> PlanPolicy:
        settings = asdict(self)
        url, s3 = settings.pop("origin_url"), settings.pop("origin_s3")
        bucket, _, prefix = s3[len("s3://"):].partition("/") if s3 else (None, "", "")
        return PlanPolicy(**settings, origin=OriginRef(url, bucket, prefix.strip("/")))


class PlanFile(Conf):
    """fill-plan.toml as written."""

    planner: PlannerConfig
    steering: Replicas  # fleet state (role "fleet") and demand (role "demand")
    origin: StoreConfig  # the catalog
    playback: Replicas = Replicas()  # demand (role "demand")
    manifests: dict[str, Any] | None = None  # a StoreConfig; default [origin]'s (`_manifests`)
    regions: dict[str, str] = {}  # site -> content region; default: the site
    plan: PolicyTable = PolicyTable()


class PlanConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What `fill plan` runs with (built by `parse`)."""

    planner: PlannerConfig
    steering: Replicas
    playback: Replicas
    origin: StoreConfig
    manifests: StoreConfig  # where fill-manifests/ is written (steering's [fill] origin reads it)
    regions: Mapping[str, str]
    policy: PlanPolicy


def load(path: Path) -> PlanConfig:
    path = Path(path).resolve()
    return parse(read_toml(path), base=path.parent)


def parse(mapping: Mapping[str, Any], base: Path | None = None) -> PlanConfig:
    f = convert(PlanFile, mapping, base=base)
    if not f.steering.urls:
        raise ConfigError("steering.replicas: at least one steering replica is required (the fleet state)")
    for site, region in f.regions.items():
        if not IDENT.fullmatch(site) or not IDENT.fullmatch(region):
            raise ConfigError(f"regions.{site}: site and region ids are 1-64 of [A-Za-z0-9_.-]")
    origin, playback = _against(f.origin, base), f.playback
    if playback.token_file is None:
        playback = replace(playback, token_file=f.steering.token_file)
    return PlanConfig(planner=f.planner, steering=f.steering, playback=playback, origin=origin,
                      manifests=_manifests(f.manifests, origin, base), regions=f.regions, policy=f.plan.policy())


def _against(store: StoreConfig, base: Path | None) -> StoreConfig:
    """A relative local location taken against the config file's folder."""
    if store.is_s3 or base is None or Path(store.location).is_absolute():
        return store
    return replace(store, location=str((base / store.location).resolve()))


def _manifests(table: dict[str, Any] | None, origin: StoreConfig, base: Path | None) -> StoreConfig:
    """[manifests]: by default [origin]'s location; an s3:// one takes the origin's endpoint and region
    (when the origin's is s3:// too) unless it names its own."""
    if table is None:
        return origin
    given = {"location": origin.location, **table}
    if origin.is_s3 and str(given["location"]).startswith("s3://"):
        given = {"endpoint_url": origin.endpoint_url, "region": origin.region, **given}
    return _against(convert(StoreConfig, given, where="manifests"), base)
