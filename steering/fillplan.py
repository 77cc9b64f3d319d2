"""Steering's side of proactive fill: `GET /v1/fill-manifest?appliance=ID` serves what `fill plan`
wrote; steering no longer plans.

The planner (`fill plan`, one job on the control plane) writes each appliance's signed manifest to the
origin store under `fill-manifests/<plan>/<appliance>.json` and then switches the pointer
`fill-manifests/current.json` (layout: fill.manifeststore). Every `poll_interval_s` a task here reads
the pointer; when it changed, it reads the manifests it names (in threads, off the loop), checks each
against the pointer (size, xxh3-128), decodes it and verifies its signature with the keys derived for
its appliance from the master, and swaps the whole set in at once. Requests are answered from memory
with the stored bytes as they are and ETag = the manifest's version, so every replica serves the same
bytes under the same ETag, and the agent may ask any of them.

Failures keep the last good state. The store unreachable or the pointer damaged: the poll raises to
the task supervisor (logged, counted, retried; /healthz lists it as degraded after a few) and nothing
changes. One manifest that is missing, damaged or not signed for its appliance: that appliance keeps
the manifest it had (or none), the rest of the plan is adopted, and it is logged and counted
(`steering_fill_manifests_rejected_total`). These checks give the same verdict on every replica.

The pointer's format and its decoder are contracts.planpointer, shared with the planner.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Mapping

import msgspec
import xxhash
from msgspec import Meta
from msgspec.structs import force_setattr

from contracts.logs import log_event
from contracts.manifest import CONTENT_TYPE, ManifestError, decode_manifest
from contracts.planpointer import POINTER, Entry, PointerError, decode_pointer
from contracts.structconf import Conf, HttpUrl, invalid
from contracts.token import Keyring

log = logging.getLogger("steering.fill")
READERS = 8
POLL_S = 5.0
Interval = Annotated[float, Meta(ge=0.5)]


class FillConfig(Conf):
    """[fill] of steering.toml."""

    # where `fill plan` writes: a local path (relative: against the config's folder, `against`) or
    # s3://bucket/prefix; None: no manifests
    origin: str | None = None
    endpoint_url: str | None = None
    origin_url: HttpUrl | None = None  # accepted from configs older than `fill plan`; unused (the planner names the origin)
    poll_interval_s: Interval = POLL_S  # how often the pointer is read
    # poll_interval_s's old name, still read: it counts when poll_interval_s is left at its default
    legacy_replan_s: Interval | None = msgspec.field(default=None, name="replan_interval_s")

    def __post_init__(self) -> None:
        legacy = self.legacy_replan_s
        if legacy is not None and self.poll_interval_s != legacy:
            if self.poll_interval_s != POLL_S:
                raise invalid("replan_interval_s", "the old name of poll_interval_s: give only poll_interval_s")
            force_setattr(self, "poll_interval_s", legacy)

    @property
    def replan_interval_s(self) -> float:
        """The interval of the server's `fill-plan` task (the name it had when steering planned)."""
        return self.poll_interval_s

    def against(self, base: Path | None) -> FillConfig:
        """A relative local `origin` taken against the config file's folder."""
        origin = self.origin
        if origin is None or origin.startswith("s3://") or base is None or Path(origin).is_absolute():
            return self
        return msgspec.structs.replace(self, origin=str(base / origin))


@dataclass(frozen=True)
class Served:
    body: bytes  # exactly as stored
    version: str
    xxh3: str
    plan: str

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Loaded:
    plan: str
    pointer: bytes
    served: dict[str, Served]
    read: int  # manifests read from the store (the rest were held already, same bytes)
    rejected: dict[str, str]  # appliance -> why its new manifest was not taken


class ManifestReader:
    def __init__(self, replica: Any, config: FillConfig | None = None) -> None:
        self.replica = replica  # its .config.fill is read at every poll, so reloads take effect
        # what is served: swapped whole, on the loop
        self.served: dict[str, Served] = {}
        self.plan: str | None = None
        self.pointer: bytes | None = None
        self.adopted_at: float | None = None
        # the store, opened on first use and again when its location changes
        self._backend: Any = None
        self._where: tuple[str | None, str | None] = (None, None)
        self._warned_origin_url = False

    async def poll(self) -> None:
        """Adopt the plan the pointer names if it changed; raise (keeping everything) when it can't."""
        config = self.replica.config.fill
        if config.origin is None:
            return
        if config.origin_url is not None and not self._warned_origin_url:
            self._warned_origin_url = True
            log_event(log, "fill-origin-url-ignored", logging.WARNING, origin_url=config.origin_url,
                      hint="manifests name the origin as `fill plan` is configured ([plan] origin_url)")
        derived = self.replica.loaded.derived
        loaded = await asyncio.to_thread(self._load, config, self.served, self.pointer, derived.for_holder)
        if loaded is None:
            return
        self.served, self.plan, self.pointer, self.adopted_at = loaded.served, loaded.plan, loaded.pointer, time.time()
        metrics = self.replica.metrics
        metrics.fill_plans_adopted.inc()
        for appliance, why in loaded.rejected.items():
            metrics.fill_manifests_rejected.inc()
            log_event(log, "fill-manifest-rejected", logging.WARNING, plan=loaded.plan, appliance=appliance,
                      error=why, kept="the manifest it had" if appliance in loaded.served else "none")
        log_event(log, "fill-plan-adopted", plan=loaded.plan, manifests=len(loaded.served), read=loaded.read,
                  rejected=len(loaded.rejected))

    replan = poll  # what steering.server schedules (the `fill-plan` task)

    def _open(self, config: FillConfig) -> Any:
        where = (config.origin, config.endpoint_url)
        if self._backend is None or where != self._where:
            from origin.backends import open_backend
            from origin.config import S3Config, parse_location

            location = parse_location(config.origin or "", endpoint_url=config.endpoint_url, where="fill.origin")
            self._backend, self._where = open_backend(location, S3Config(max_attempts=3)), where
        return self._backend

    def _load(self, config: FillConfig, held: Mapping[str, Served], pointer: bytes | None,
              keys_for: Callable[[str], Keyring]) -> Loaded | None:
        """In a thread. None when there is nothing new (no plan yet, or the same pointer)."""
        from origin.core.errors import ObjectNotFound

        backend = self._open(config)
        try:
            raw = backend.get_bytes(POINTER)
        except ObjectNotFound:
            return None  # no plan written yet (or the store was emptied: keep what we serve)
        if raw == pointer:
            return None
        pointer = decode_pointer(raw)
        plan, entries = pointer.plan, dict(pointer.manifests)
        fresh = {a: e for a, e in entries.items() if not (a in held and held[a].xxh3 == e.xxh3)}

        def read(item: tuple[str, Entry]) -> tuple[str, bytes | Exception]:
            try:
                return item[0], backend.get_bytes(item[1].key)
            except ObjectNotFound as exc:
                return item[0], exc
        with ThreadPoolExecutor(READERS) as pool:
            bodies = dict(pool.map(read, fresh.items()))  # other backend errors raise: retry the whole poll
        served, rejected = {}, {}
        for appliance, entry in entries.items():
            if appliance not in fresh:
                served[appliance] = Served(held[appliance].body, entry.version, entry.xxh3, plan)
                continue
            verdict = _check(appliance, entry, bodies[appliance], keys_for)
            if isinstance(verdict, str):
                rejected[appliance] = verdict
                if appliance in held:
                    served[appliance] = held[appliance]
            else:
                served[appliance] = Served(verdict, entry.version, entry.xxh3, plan)
        return Loaded(plan, raw, served, len(fresh), rejected)

    def reply(self, appliance: str, if_none_match: str | None) -> Reply:
        """200 with the stored manifest and its ETag, 304 when If-None-Match names it, 404 without one."""
        served = self.served.get(appliance)
        if served is None:
            return Reply(404, {"Content-Type": "text/plain"}, b"no fill plan for this appliance (yet)\n")
        headers = {"ETag": served.etag, "Cache-Control": "no-cache", "X-Fill-Plan": served.plan}
        if if_none_match is not None and _etag_matches(if_none_match, served.etag):
            return Reply(304, headers, b"")
        return Reply(200, {**headers, "Content-Type": CONTENT_TYPE}, served.body)


FillPlanner = ManifestReader  # the name steering.server knows it by


def _check(appliance: str, entry: Entry, body: bytes | Exception,
           keys_for: Callable[[str], Keyring]) -> bytes | str:
    """The body when it is what the pointer says and signed for its appliance; else why not."""
    if isinstance(body, Exception):
        return f"{entry.key}: {body}"
    if len(body) != entry.size or xxhash.xxh3_128_hexdigest(body) != entry.xxh3:
        return f"{entry.key}: size or xxh3-128 differs from the pointer's"
    try:
        manifest = decode_manifest(body, appliance, keys_for(appliance))
    except ManifestError as exc:
        return f"{entry.key}: {exc}"
    if manifest.version != entry.version:
        return f"{entry.key}: version {manifest.version} is not the pointer's {entry.version}"
    return body


def _etag_matches(header: str, etag: str) -> bool:
    """RFC 9110 §13.1.2: weak comparison over a list of tags, or *."""
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)


__all__ = ["FillConfig", "ManifestReader", "FillPlanner", "Reply", "PointerError"]
