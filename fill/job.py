"""`fill plan`: one planner run for the whole fleet, on the control plane (a systemd timer starts it
before the fill window and hourly inside it; an operator may run it at any time).

    fleet state from every steering replica ─┐
    demand from every steering and playback ─┼─► checks ─► plan (fill.service) ─► sign each
    catalog from the origin ─────────────────┘    (fill.credentials) ─► write the manifests, then the pointer

What may be missing, and what may not. A replica that does not answer, or answers something that
does not decode, is logged and listed in the summary; the plan goes on without it as long as one
steering replica gave the fleet state. A catalog entry that does not parse is skipped and listed.
Files of a withdrawn title or version (the withdrawal log in the manifest store, fill.withdrawn) are
left out of every manifest. The run fails — writes nothing, so the manifests in force stay in force
and no appliance deletes a file because of it — when no steering replica answers, no appliance has reported to any of them, the
catalog cannot be listed or read, it yields no file, more than `max_catalog_skip_fraction` of its
entries are broken, or the store cannot be written (the pointer is written last, so a failed write
leaves the old plan in force). An appliance the fleet knows but no replica has a report for (its
capacity unknown) keeps its manifest of the plan in force, copied into the new plan.

Exit codes: 0 a plan was written (the summary says what was missing), 1 the run failed and nothing was
written, 2 usage or config error, 3 another run holds the lock (nothing done).
"""
from __future__ import annotations

import asyncio
import fcntl
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from traceback import format_exc
from typing import Any

from contracts import demand as demand_wire
from contracts.catalog import CATALOG_PREFIX, CatalogError, decode, title_of_catalog_key
from contracts.keys import DerivedKeys, derived_for, load_keyring
from contracts.manifest import encode_manifest
from contracts.structconf import ConfigError
from fill import fleetstate, planmetrics
from fill.config import PlanConfig, StoreConfig
from fill.credentials import authorize_all
from fill.gather import Gathered, gather, read_token
from fill.log import log
from fill.manifeststore import Entry, ManifestStore, Pointer, StoreError, entry_for, manifest_key, plan_id
from fill.service import Skipped, build_manifests, by_region, checked_catalog, demand_popularity
from origin.core.errors import BackendError, ObjectNotFound

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUSY = 0, 1, 2, 3
READERS = 8


class PlanFailed(Exception):
    """The run cannot plan safely: nothing is written, the manifests in force stay."""


class Busy(Exception):
    pass


def open_store(store: StoreConfig, where: str) -> Any:
    """An origin backend (origin.backends) over a configured location."""
    from origin.backends import open_backend
    from origin.config import S3Config, parse_location

    location = parse_location(store.location, endpoint_url=store.endpoint_url, region=store.region, where=where)
    return open_backend(location, S3Config(max_attempts=4))


def master_keys(path: Path) -> Any:
    """The fleet's master keys; a key file derived for one holder is refused (manifests signed with
    keys derived from it would verify nowhere)."""
    holder = derived_for(path)
    if holder is not None:
        raise ConfigError(f"planner.key_file: {path} holds keys derived for {holder!r}, not the master keys")
    return load_keyring(path)


def read_catalog(backend: Any) -> tuple[list[Any], list[Skipped]]:
    """Every catalog entry that parses, and one Skipped per entry that does not. The backend's errors
    (listing or reading) propagate: a catalog read in part is not planned on."""
    keys = [info.key for info in backend.list(CATALOG_PREFIX) if title_of_catalog_key(info.key) is not None]

    def one(key: str) -> tuple[Any, Skipped | None]:
        try:
            return decode(backend.get_bytes(key), key), None
        except ObjectNotFound:
            return None, None  # deleted between the listing and the read
        except CatalogError as exc:
            return None, Skipped(title_of_catalog_key(key) or key, str(exc)[:300])

    with ThreadPoolExecutor(READERS) as pool:
        results = list(pool.map(one, keys))
    return [e for e, _ in results if e is not None], [s for _, s in results if s is not None]


@dataclass
class Run:
    """One run's progress and summary (every field ends up in the last log line)."""

    started: float = field(default_factory=time.monotonic)
    summary: dict[str, Any] = field(default_factory=dict)

    def note(self, section: str, **fields: Any) -> None:
        self.summary.setdefault(section, {}).update(fields)


class Planner:
    def __init__(self, cfg: PlanConfig, now: float | None = None) -> None:
        self.cfg = cfg
        self.now = time.time() if now is None else now
        self.run = Run()

    # ---- the whole ---------------------------------------------------------------------------
    def plan(self, dry_run: bool = False) -> int:
        try:
            with self._lock():
                self._plan(dry_run)
        except Busy as exc:
            log("plan-busy", error=str(exc))
            return EXIT_BUSY
        except PlanFailed as exc:
            return self._failed(str(exc))
        except (ConfigError, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug: the same promise (nothing switched), with its traceback
            return self._failed(f"internal error: {type(exc).__name__}: {exc}", traceback=format_exc())
        log("plan-done", ok=True, duration_s=self._elapsed(), **self.run.summary)
        self._metrics(ok=True)
        return EXIT_OK

    def _failed(self, error: str, **extra: Any) -> int:
        log("plan-failed", ok=False, error=error, kept="the manifests in force stay (the pointer was not switched)",
            duration_s=self._elapsed(), **self.run.summary, **extra)
        self._metrics(ok=False)
        return EXIT_FAILED

    def _metrics(self, ok: bool) -> None:
        """The textfile for node_exporter, beside the lock (no state_dir: none). Never fails the run."""
        folder = self.cfg.planner.state_dir
        if folder is None:
            return
        try:
            folder.mkdir(parents=True, exist_ok=True)
            planmetrics.write(folder / planmetrics.FILENAME, ok, self._elapsed(), self.run.summary)
        except OSError as exc:
            log("metrics-not-written", error=f"{type(exc).__name__}: {exc}")

    def _elapsed(self) -> float:
        return round(time.monotonic() - self.run.started, 3)

    def _plan(self, dry_run: bool) -> None:
        cfg = self.cfg
        derived = DerivedKeys(master_keys(cfg.planner.key_file))  # ConfigError: a usage error
        log("plan-start", steering=list(cfg.steering.urls), playback=list(cfg.playback.urls),
            origin=cfg.origin.location, manifests=cfg.manifests.location, dry_run=dry_run)
        gathered = self._gather()
        states = self._fleet(gathered)
        counts = by_region(self._demand(gathered), cfg.regions)
        check = self._catalog()
        view = fleetstate.view_of(states, cfg.regions)
        sizes = {f.key: f.size for f in check.files}
        demand = demand_popularity(counts, sizes)
        regions = {c.region for c in view.clusters}
        self.run.note("demand", regions=len(counts), unknown_regions=sorted(set(counts) - regions))
        manifests = build_manifests(view, check.files, fleetstate.reports_of(states), self.now, cfg.policy, demand)
        signed = authorize_all(manifests, derived, self.now)
        self.run.note("planned", appliances=len(signed), files=sum(len(m.files) for m in signed.values()),
                      bytes=sum(m.total_bytes() for m in signed.values()))
        log("planned", **self.run.summary["planned"])
        self._write(states, {a: (m.version, encode_manifest(m)) for a, m in signed.items()}, dry_run)

    # ---- inputs -------------------------------------------------------------------------------
    def _gather(self) -> Gathered:
        cfg = self.cfg
        try:
            steering_token = read_token(cfg.steering.token_file)
            playback_token = read_token(cfg.playback.token_file)
        except OSError as exc:
            raise ConfigError(f"token file: {exc}") from None
        gathered = asyncio.run(gather(cfg.steering.urls, cfg.playback.urls, steering_token, playback_token,
                                      cfg.planner.request_timeout_s, cfg.planner.max_response_bytes))
        for what, answers in (("fleet-state", gathered.fleet), ("demand", gathered.demand)):
            for a in answers:
                if a.ok:
                    log("replica", url=a.url, kind=a.kind, what=what, ok=True)
                else:
                    log("replica-skipped", url=a.url, kind=a.kind, what=what, ok=False, problem=a.problem)
        return gathered

    def _fleet(self, gathered: Gathered) -> list[fleetstate.ApplianceState]:
        answered = [a for a in gathered.fleet if a.ok]
        self.run.note("steering", asked=len(gathered.fleet), answered=len(answered),
                      failed={a.url: a.problem for a in gathered.fleet if not a.ok})
        if not answered:
            raise PlanFailed("no steering replica gave the fleet state: "
                             + "; ".join(f"{a.url}: {a.problem}" for a in gathered.fleet))
        states = fleetstate.merge(a.value for a in answered)
        reported = [a for a in states if a.reported]
        self.run.note("fleet", appliances=len(states), reported=len(reported))
        if not reported:
            raise PlanFailed("no appliance has reported to the steering replicas that answered: "
                             "their capacity is unknown")
        return states

    def _demand(self, gathered: Gathered) -> demand_wire.Counts:
        reports = [a.value for a in gathered.demand if a.ok]
        self.run.note("demand", asked=len(gathered.demand), answered=len(reports),
                      failed={a.url: a.problem for a in gathered.demand if not a.ok})
        return demand_wire.merge(reports, self.now)

    def _catalog(self) -> Any:
        limit = self.cfg.planner.max_catalog_skip_fraction
        try:
            entries, skipped = read_catalog(open_store(self.cfg.origin, "origin.location"))
        except BackendError as exc:
            raise PlanFailed(f"the catalog cannot be read: {exc}") from None
        check = checked_catalog(entries)
        skipped += check.skipped
        for s in skipped:
            log("catalog-entry-skipped", title=s.title_id, reason=s.reason)
        total = check.titles + len(skipped)
        self.run.note("catalog", titles=check.titles, files=len(check.files),
                      skipped=[{"title": s.title_id, "reason": s.reason} for s in skipped])
        log("catalog", titles=check.titles, files=len(check.files), skipped=len(skipped))
        if not check.files:
            raise PlanFailed(f"the catalog at {self.cfg.origin.location} yields no file to plan")
        if skipped and len(skipped) > limit * total:
            raise PlanFailed(f"{len(skipped)} of {total} catalog entries are broken (more than "
                             f"planner.max_catalog_skip_fraction = {limit})")
        return self._less_withdrawn(check)

    def _less_withdrawn(self, check: Any) -> Any:
        """The catalog less every file of a withdrawn title or version (origin.withdrawals): no manifest
        names them, so agents delete their copies and never fetch them again."""
        from dataclasses import replace

        from origin.withdrawals import read_withdrawals

        try:
            withdrawn, rejected = read_withdrawals(open_store(self.cfg.manifests, "manifests.location"))
        except BackendError as exc:
            raise PlanFailed(f"the withdrawals cannot be read from the manifest store: {exc}") from None
        for key, why in rejected.items():
            log("withdrawal-event-skipped", key=key, reason=why)
        left_out = [f.key for f in check.files if withdrawn.covers(f.key) is not None]
        self.run.note("withdrawn", targets=sorted(e.target for e in withdrawn.active.values()),
                      files_left_out=len(left_out), events_skipped=sorted(rejected))
        if left_out:
            log("withdrawn-left-out", files=len(left_out), targets=sorted(e.target for e in withdrawn.active.values()))
        gone = set(left_out)
        return replace(check, files=tuple(f for f in check.files if f.key not in gone)) if gone else check

    # ---- output -------------------------------------------------------------------------------
    def _write(self, states: list[fleetstate.ApplianceState], planned: dict[str, tuple[str, bytes]],
               dry_run: bool) -> None:
        try:
            store = ManifestStore(open_store(self.cfg.manifests, "manifests.location"))
            previous = self._previous(store)
            carried = self._carry(store, previous, states, planned)
        except BackendError as exc:
            raise PlanFailed(f"the manifest store cannot be read: {exc}") from None
        pointer, bodies = self._assemble(planned)
        self.run.summary.update(plan=pointer.plan, previous=previous.plan if previous else None,
                                written=not dry_run, appliances=len(bodies), carried=sorted(carried),
                                unplanned=sorted(a.id for a in states if a.id not in bodies))
        if not dry_run:
            self._publish(store, pointer, bodies)

    def _assemble(self, planned: dict[str, tuple[str, bytes]]) -> tuple[Pointer, dict[str, bytes]]:
        """The new plan's pointer and objects; an appliance whose id cannot be a key is left out."""
        pid = plan_id(self.now, {a: entry_for("", v, b).xxh3 for a, (v, b) in planned.items()})
        entries: dict[str, Entry] = {}
        bodies: dict[str, bytes] = {}
        for appliance, (version, body) in sorted(planned.items()):
            try:
                key = manifest_key(pid, appliance)
            except ValueError as exc:
                log("appliance-skipped", appliance=appliance, reason=str(exc))
                continue
            entries[appliance], bodies[appliance] = entry_for(key, version, body), body
        return Pointer(pid, self.now, entries), bodies

    def _publish(self, store: ManifestStore, pointer: Pointer, bodies: dict[str, bytes]) -> None:
        versions = {a: e.version for a, e in pointer.manifests.items()}
        summary = json.dumps({"generated_at": self.now, "versions": versions, **self.run.summary},
                             separators=(",", ":"), default=str).encode()
        try:
            store.publish(pointer, bodies, summary)
        except BackendError as exc:
            raise PlanFailed(f"writing the plan to {store.describe()} failed (the pointer was not switched): "
                             f"{exc}") from None
        log("written", plan=pointer.plan, store=store.describe(), manifests=len(bodies))
        try:
            gone = store.collect(self.cfg.planner.keep_plans, pointer.plan)
            if gone:
                log("old-plans-deleted", plans=gone)
        except Exception as exc:  # noqa: BLE001 - tidying only: the new plan is in force either way
            log("old-plans-kept", error=f"{type(exc).__name__}: {exc}")

    def _previous(self, store: ManifestStore) -> Pointer | None:
        try:
            return store.current()
        except StoreError as exc:  # a damaged pointer: the new one replaces it; nothing to carry
            log("pointer-unreadable", error=str(exc))
            return None

    def _carry(self, store: ManifestStore, previous: Pointer | None, states: list[fleetstate.ApplianceState],
               planned: dict[str, tuple[str, bytes]]) -> list[str]:
        """Appliances of the fleet the plan has no manifest for (no report anywhere) keep the one in
        force: its bytes go into the new plan as they are. Returns who was carried."""
        carried = []
        for a in states:
            entry = previous.manifests.get(a.id) if previous is not None else None
            if a.id in planned or entry is None:
                continue
            try:
                planned[a.id] = (entry.version, store.read(entry))
            except (StoreError, ObjectNotFound) as exc:
                log("carry-skipped", appliance=a.id, reason=str(exc))
                continue
            carried.append(a.id)
            log("carried", appliance=a.id, plan=previous.plan if previous else None)
        return carried

    # ---- one run at a time ------------------------------------------------------------------
    def _lock(self) -> "_Lock":
        return _Lock(self.cfg.planner.state_dir)


class _Lock:
    """flock on <state_dir>/fill-plan.lock (no state_dir: no lock). Two planners writing at once
    would still leave one whole plan in force (the pointer is one write), but each would waste a run."""

    def __init__(self, state_dir: Path | None) -> None:
        self.path = state_dir / "fill-plan.lock" if state_dir is not None else None
        self.fd: int | None = None

    def __enter__(self) -> "_Lock":
        if self.path is None:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"planner.state_dir: {exc}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise Busy(f"{self.path}: another `fill plan` is running") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the lock


__all__ = ["Planner", "PlanFailed", "read_catalog", "open_store", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE",
           "EXIT_BUSY"]
