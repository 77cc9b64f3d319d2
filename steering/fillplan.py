"""Steering's side of proactive fill: `GET /v1/fill-manifest?appliance=ID`.

Fill's planner (fill.service, pure) turns the live fleet (capacity from reports, who holds what),
the catalog (read from the origin) and reported popularity into one manifest per appliance. Plans
over 10^5 files take seconds, so a task rebuilds them every `replan_interval_s` in a thread from a
copy of the live state, and requests are answered from the last plan (ETag / 304). Every replica
computes the same plan from the same inputs, so an agent may ask any of them.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.ids import ApplianceId
from contracts.tomlconf import ConfigError, Section


@dataclass(frozen=True)
class FillConfig:
    origin: str | None = None  # the catalog's origin: a local path or s3://bucket/prefix (None: no fill plans)
    endpoint_url: str | None = None
    origin_url: str | None = None  # an HTTP origin agents may fetch from (`origin serve`), named in manifests
    replan_interval_s: float = 60.0


def parse_fill(s: Section, base: Path | None) -> FillConfig:
    origin = s.str("origin", None)
    if origin is not None and not origin.startswith("s3://") and base is not None and not Path(origin).is_absolute():
        origin = str(base / origin)
    cfg = FillConfig(origin=origin, endpoint_url=s.str("endpoint_url", None), origin_url=s.str("origin_url", None),
                     replan_interval_s=s.float("replan_interval_s", 60.0, min=0.5))
    s.done()
    if cfg.origin_url is not None and not cfg.origin_url.startswith(("http://", "https://")):
        raise ConfigError(f"{s.key('origin_url')}: must be an http(s) URL")
    return cfg


class FillPlanner:
    def __init__(self, replica: Any, config: FillConfig) -> None:
        self.replica = replica
        self.config = config
        self.manifests: dict[ApplianceId, Any] = {}
        self.planned_at: float | None = None
        self._catalog: Any = None

    def _open_catalog(self) -> Any:
        from origin.backends import open_backend
        from origin.catalog import Catalog
        from origin.config import parse_location

        location = parse_location(self.config.origin, endpoint_url=self.config.endpoint_url, where="fill.origin")
        return Catalog(open_backend(location))

    async def replan(self) -> None:
        if self.config.origin is None:
            return
        from fill.core.model import OriginRef, PlanPolicy
        from fill.credentials import authorize_all
        from fill.service import build_manifests, popularity_of, view_from_state

        state = self.replica.state
        holders = {k: frozenset(v) for k, v in state.inventory.view().items()}  # a copy: planning runs in a thread
        reports = dict(state.reports)
        sites = list(self.replica.loaded.fleet.sites.values())
        policy = PlanPolicy(origin=OriginRef(url=self.config.origin_url))

        derived = self.replica.loaded.derived

        def build() -> dict[ApplianceId, Any]:
            if self._catalog is None:
                self._catalog = self._open_catalog()
            entries = self._catalog.list()
            view = view_from_state(sites, reports, holders)
            now = time.time()
            # Each manifest leaves signed for its appliance, with a credential per source it names.
            return authorize_all(build_manifests(view, entries, popularity_of(reports), now, policy), derived, now)

        # A failure raises to the task supervisor (logged with its traceback, counted, retried after a
        # backoff) before anything is assigned: the last plan stays, and agents keep their current set.
        self.manifests = await asyncio.to_thread(build)
        self.planned_at = time.time()

    def reply(self, appliance: str, if_none_match: str | None) -> Any:
        from fill.service import manifest_reply

        return manifest_reply(self.manifests.get(ApplianceId(appliance)), if_none_match)
