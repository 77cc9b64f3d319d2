"""What steering shows of BGP: per appliance its sessions (as its last heartbeat said) and the routes
held from it, per site whether its appliances heard the same announcements (all of a site's
appliances should; a difference is the ISP's misconfiguration to fix), and the `steering_bgp_*`
series. Plain functions over the fleet state (steering.core.live); the service puts them in /v1/fleet
and the replica's metrics registry.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from contracts.ids import ApplianceId
from steering.core.fleet import SiteSpec
from steering.core.live import FleetState

if TYPE_CHECKING:
    from steering.service import Replica


def appliance_bgp(state: FleetState, appliance: ApplianceId) -> dict[str, Any] | None:
    """Sessions and routes of one appliance; None when it reports no BGP."""
    report = state.reports.get(appliance)
    sessions = report.health.bgp if report is not None else ()
    generation = state.routes.generation(appliance)
    if not sessions and generation is None:
        return None
    return {"sessions": [{"peer": s.peer, "peer_as": s.peer_as, "state": s.state, "since": s.since,
                          "prefixes": s.prefixes, "refused": s.refused, "last_update_at": s.last_update_at}
                         for s in sessions],
            "routes": {"generation": generation, "prefixes": state.routes.count(appliance)}}


def site_bgp(state: FleetState, site: SiteSpec) -> dict[str, Any] | None:
    """Whether the site's appliances that report routes heard the same ones; None without BGP."""
    reporting = [a.id for a in site.appliances if state.routes.generation(a.id) is not None]
    if not reporting:
        return None
    cmp = state.routes.compare(reporting)
    return {"appliances": len(reporting), "announcements_differ": not cmp.consistent,
            "differing": list(cmp.differing), "examples": list(cmp.examples),
            "without_bgp": [a.id for a in site.appliances if a.id not in reporting]}


class BgpCollector:
    """steering_bgp_* at scrape time (on the loop, as the /metrics handler runs)."""

    def __init__(self, replica: "Replica") -> None:
        self.replica = replica

    def collect(self) -> Iterator[Metric]:
        state = self.replica.state
        yield GaugeMetricFamily("steering_bgp_prefixes", "Distinct client prefixes heard over BGP by the fleet.",
                                value=state.routes.prefixes)
        yield GaugeMetricFamily("steering_bgp_routes", "Routes held (one per appliance and prefix).",
                                value=state.routes.total())
        sessions = GaugeMetricFamily("steering_bgp_sessions", "Appliances' BGP sessions by state, as reported.",
                                     labels=["state"])
        counts: dict[str, int] = {}
        for report in state.reports.values():
            for s in report.health.bgp:
                counts[s.state] = counts.get(s.state, 0) + 1
        for name, n in sorted(counts.items()):
            sessions.add_metric([name], n)
        yield sessions
        differ = sum(1 for site in state.fleet.sites.values()
                     if (view := site_bgp(state, site)) is not None and view["announcements_differ"])
        yield GaugeMetricFamily("steering_bgp_sites_inconsistent", "Sites whose appliances heard different "
                                "announcements.", value=differ)
        updates = CounterMetricFamily("steering_route_updates", "BGP route updates in heartbeats, by verdict "
                                      "(replace, apply, gap, dropped).", labels=["verdict"])
        for verdict, n in sorted(state.route_updates.items()):
            updates.add_metric([verdict], n)
        yield updates


__all__ = ["appliance_bgp", "site_bgp", "BgpCollector"]
