"""The live state of the fleet as one replica sees it: health per appliance, who holds what, the last
report of each. Like h11's Connection it is a state machine object without I/O: the shell feeds it
heartbeats and clock ticks (`now` is a monotonic time it supplies) and reads verdicts back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from contracts.heartbeat import Heartbeat, HeartbeatAck, HeartbeatError, HealthSnapshot
from contracts.ids import ApplianceId, FileKey, SiteId
from steering.core.fleet import Fleet
from steering.core.health import MISSED, Health, HealthPolicy, Status, is_late, observe, vitals_of
from steering.core.inventory import InventoryIndex, InventoryResult
from steering.core.rank import LiveView
from steering.core.routes import RouteIndex


class UnknownAppliance(HeartbeatError):
    status_hint = 404
    reason = "unknown-appliance"


@dataclass(frozen=True, slots=True)
class LastReport:
    received_at: float  # monotonic
    sent_at: float  # the appliance's wall clock
    seq: int
    site: SiteId  # as reported (the fleet config is authoritative)
    health: HealthSnapshot


@dataclass(frozen=True, slots=True)
class Transition:
    appliance: ApplianceId
    before: Status
    after: Status
    reason: str


@dataclass(frozen=True, slots=True)
class Ingested:
    ack: HeartbeatAck
    inventory: InventoryResult
    transition: Transition | None
    site_mismatch: bool
    routes: InventoryResult | None = None  # None: the appliance runs no BGP


class FleetState:
    def __init__(self, fleet: Fleet, policy: HealthPolicy) -> None:
        self.fleet = fleet
        self.policy = policy
        self.health: dict[ApplianceId, Health] = {a: Health() for a in fleet.appliances}
        self.reports: dict[ApplianceId, LastReport] = {}
        self.inventory = InventoryIndex()
        self.routes = RouteIndex()  # client networks the appliances heard over BGP
        self.route_updates: dict[str, int] = {}  # verdict -> count (replace, apply, gap, dropped)
        self._up: set[ApplianceId] = set()
        self._pullers: set[ApplianceId] = set()
        self.view = LiveView(up=self._up, holders=self.inventory.holders, pullers=self._pullers)

    def ingest(self, hb: Heartbeat, now: float) -> Ingested:
        spec = self.fleet.appliances.get(hb.appliance_id)
        if spec is None:
            raise UnknownAppliance(f"appliance {hb.appliance_id!r} is not in the fleet config")
        inv = self.inventory.apply(hb.appliance_id, hb.inventory)
        routes = self._routes(hb)
        self.reports[hb.appliance_id] = LastReport(now, hb.sent_at, hb.seq, hb.site, hb.health)
        if hb.health.pull_through:
            self._pullers.add(hb.appliance_id)
        else:
            self._pullers.discard(hb.appliance_id)
        transition = self._observe(hb.appliance_id, observe(
            self.health[hb.appliance_id], vitals_of(hb, spec.capacity_bps), now, self.policy))
        state = self.health[hb.appliance_id]
        ack = HeartbeatAck(generation_ack=inv.generation, need_full=inv.need_full,
                           status=state.status.value, reason=state.reason,
                           routes_ack=routes.generation if routes else None,
                           routes_need_full=routes.need_full if routes else False)
        return Ingested(ack, inv, transition, site_mismatch=hb.site != spec.site, routes=routes)

    def _routes(self, hb: Heartbeat) -> InventoryResult | None:
        if hb.routes is None:  # no BGP (any more): what it heard before is gone
            if self.routes.generation(hb.appliance_id) is not None:
                self.routes.drop(hb.appliance_id)
                self.route_updates["dropped"] = self.route_updates.get("dropped", 0) + 1
            return None
        result = self.routes.apply(hb.appliance_id, hb.routes)
        self.route_updates[result.verdict.value] = self.route_updates.get(result.verdict.value, 0) + 1
        return result

    def tick(self, now: float) -> list[Transition]:
        """Mark down every appliance whose reports stopped; returns what changed."""
        changed = []
        for appliance, state in self.health.items():
            if is_late(state, now, self.policy):
                transition = self._observe(appliance, observe(state, MISSED, now, self.policy))
                if transition is not None:
                    changed.append(transition)
        return changed

    def _observe(self, appliance: ApplianceId, new: Health) -> Transition | None:
        old = self.health[appliance]
        self.health[appliance] = new
        if new.status is Status.UP:
            self._up.add(appliance)
        else:
            self._up.discard(appliance)
        if new.status is old.status:
            return None
        return Transition(appliance, old.status, new.status, new.reason)

    def reconfigure(self, fleet: Fleet, policy: HealthPolicy) -> None:
        """Adopt a reloaded fleet: appliances kept keep their state; removed ones are forgotten."""
        for gone in set(self.health) - set(fleet.appliances):
            del self.health[gone]
            self.reports.pop(gone, None)
            self.inventory.drop(gone)
            self.routes.drop(gone)
            self._up.discard(gone)
            self._pullers.discard(gone)
        for new in set(fleet.appliances) - set(self.health):
            self.health[new] = Health()
        self.fleet = fleet
        self.policy = policy

    def up_count(self) -> int:
        return len(self._up)

    def popularity(self) -> Mapping[FileKey, tuple[float, float]]:
        """Fleet-wide decayed popularity: the sum of every appliance's last counters."""
        total: dict[FileKey, tuple[float, float]] = {}
        for report in self.reports.values():
            for key, (requests, nbytes) in report.health.popularity.items():
                r, b = total.get(key, (0.0, 0.0))
                total[key] = (r + requests, b + nbytes)
        return total
