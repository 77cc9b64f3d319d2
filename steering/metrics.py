"""Steering's Prometheus series (prometheus-client): one CollectorRegistry per replica,
`SteeringMetrics.registry`; the server's TaskSupervisor registers its task series there too (the
web guard keeps its own, appended to the scrape as in origin and playback).

The hot path, one count per decision on /v1/steer (~50k/s), stays a plain dict increment keyed by
the decision's (LocateMethod, Outcome) pair: both are str enums, so the key hashes in C and no label
text is built per decision. A collector reads that dict at scrape time, with the gauges other
objects already hold (appliances by status, draining, decision-log drops, prefixes, uptime). What
happens at most a few hundred times a second (heartbeats, inventory updates, status changes,
reloads, refusals, fill plans) counts into prometheus-client Counters directly.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from steering.core.health import Status
from steering.core.locate import LocateMethod
from steering.core.rank import Outcome

if TYPE_CHECKING:
    from steering.service import Replica


class SteeringMetrics:
    """A replica's series. `decisions` is the hot path's plain counter (see the module's note)."""

    def __init__(self, replica: "Replica") -> None:
        self.registry = CollectorRegistry()
        # per decision: plain ints, exposed by _ReplicaCollector as steering_decisions_total
        self.decisions: dict[tuple[LocateMethod, Outcome], int] = {}
        r = self.registry
        self.heartbeats = Counter("steering_heartbeats", "Heartbeats received, by result.", ["result"], registry=r)
        self.inventory_updates = Counter("steering_inventory_updates",
                                         "Inventory updates by verdict (replace, apply, gap).", ["verdict"], registry=r)
        self.health_transitions = Counter("steering_health_transitions",
                                          "Appliance status changes, by new status and reason.", ["to", "reason"],
                                          registry=r)
        self.reloads = Counter("steering_reloads", "Reloads of the fleet, keys and GeoIP database, by result.",
                               ["result"], registry=r)
        self.errors = Counter("steering_errors", "Requests answered with an error, by reason (internal: a bug, "
                              "logged with its traceback).", ["reason"], registry=r)
        self.fill_plans_adopted = Counter("steering_fill_plans_adopted", "Fill plans adopted (the pointer changed "
                                          "and its manifests were read).", registry=r)
        self.fill_manifests_rejected = Counter("steering_fill_manifests_rejected", "Appliance manifests of an "
                                               "adopted plan refused (missing, damaged or badly signed).", registry=r)
        self.withdrawal_events_rejected = Counter("steering_withdrawal_events_rejected", "Withdrawal log events "
                                                  "skipped (damaged or not an event).", registry=r)
        self.registry.register(_ReplicaCollector(replica, self.decisions))

    def text(self) -> str:
        return generate_latest(self.registry).decode()


class _ReplicaCollector:
    """Reads the replica's plain counters and state at scrape time (on the loop, as the handler runs)."""

    def __init__(self, replica: "Replica", decisions: dict[tuple[LocateMethod, Outcome], int]) -> None:
        self.replica, self.decisions = replica, decisions

    def collect(self) -> Iterator[Metric]:
        r = self.replica
        decided = CounterMetricFamily("steering_decisions", "Steering answers by how the client was located and "
                                      "the outcome.", labels=["method", "outcome"])
        for (method, outcome), n in sorted(self.decisions.items()):
            decided.add_metric([method.value, outcome.value], n)
        yield decided
        counts = {s: 0 for s in Status}
        for health in r.state.health.values():
            counts[health.status] += 1
        by_status = GaugeMetricFamily("steering_appliances", "Appliances by status as this replica sees them.",
                                      labels=["status"])
        for status, n in counts.items():
            by_status.add_metric([status.value], n)
        yield by_status
        yield GaugeMetricFamily("steering_draining", "1 while draining after SIGTERM.", value=int(r.draining))
        yield GaugeMetricFamily("steering_withdrawn", "Titles and title versions withdrawn (steering answers 410 "
                                "for their files).", value=len(r.withdrawals.active))
        yield CounterMetricFamily("steering_decision_log_dropped", "Decision log lines dropped (backlog or write "
                                  "errors).", value=r.decisions.dropped)
        yield GaugeMetricFamily("steering_prefixes", "Client prefixes in the fleet file.",
                                value=len(r.state.fleet.prefixes))
        yield GaugeMetricFamily("steering_uptime_seconds", "Seconds since start.",
                                value=round(r.wall() - r.started_at, 3))
