"""Is an appliance up? A pure state machine fed with reports and "no report in time" events.

Down fast, up slow, with a band between: an appliance goes down on `down_after` consecutive breaching
reports (egress above `egress_down_fraction` of capacity, too many failed disks, or not accepting) —
on its first report that says draining (an operator's drain is no measurement to smooth) — or after `missed_reports` intervals without a report. It comes back only after `up_after`
consecutive clean reports, and "clean" for a down appliance means egress below the lower
`egress_up_fraction`: a load signal that wobbles around one threshold cannot make it flap (Traffic
Monitor's users' first complaint). An appliance never seen before is up on its first clean report, so
a restarted steering replica serves at once.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from contracts.heartbeat import DiskState, Heartbeat


class Status(str, Enum):
    UNKNOWN = "unknown"  # no report yet
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class HealthPolicy:
    interval_s: float = 10.0  # how often appliances report
    missed_reports: int = 3  # K: down after K intervals with no report
    egress_down_fraction: float = 0.90
    egress_up_fraction: float = 0.80
    max_failed_disk_fraction: float = 0.5  # down above this fraction (and always when all failed)
    down_after: int = 1
    up_after: int = 3

    @property
    def late_after_s(self) -> float:
        return self.missed_reports * self.interval_s


@dataclass(frozen=True, slots=True)
class Vitals:
    """What health judges in one report."""

    accepting: bool
    draining: bool
    egress_bps: int
    capacity_bps: int
    disks_total: int = 0
    disks_failed: int = 0


@dataclass(frozen=True, slots=True)
class Missed:
    """No report arrived within the policy's late_after_s."""


MISSED = Missed()


@dataclass(frozen=True, slots=True)
class Health:
    status: Status = Status.UNKNOWN
    reason: str = "no-report"  # why it is in this status: ok | missed-reports | draining | ...
    last_report_at: float | None = None
    good_streak: int = 0
    bad_streak: int = 0
    changed_at: float = 0.0
    transitions: int = 0


def vitals_of(hb: Heartbeat, capacity_bps: int | None = None) -> Vitals:
    """Reduce a heartbeat; the fleet's configured capacity, when given, overrides the reported one."""
    h = hb.health
    return Vitals(
        accepting=h.accepting, draining=h.draining, egress_bps=h.egress_bps,
        capacity_bps=capacity_bps or h.capacity_bps, disks_total=len(h.disks),
        disks_failed=sum(1 for d in h.disks if d.state is DiskState.FAILED),
    )


def breach(v: Vitals, status: Status, policy: HealthPolicy) -> str | None:
    """The reason this report is not clean, or None. An up appliance breaches above the high egress
    mark; any other must come in under the low one (the hysteresis band)."""
    if v.draining:
        return "draining"
    if not v.accepting:
        return "not-accepting"
    if v.disks_total and (v.disks_failed == v.disks_total
                          or v.disks_failed / v.disks_total > policy.max_failed_disk_fraction):
        return "disks-failed"
    fraction = policy.egress_down_fraction if status is Status.UP else policy.egress_up_fraction
    if v.capacity_bps <= 0 or v.egress_bps > fraction * v.capacity_bps:
        return "egress-high"
    return None


def observe(state: Health, event: Vitals | Missed, now: float, policy: HealthPolicy) -> Health:
    if isinstance(event, Missed):
        if state.status is Status.DOWN and state.reason == "missed-reports":
            return state
        return _to(state, Status.DOWN, "missed-reports", now, good=0, bad=0)
    reason = breach(event, state.status, policy)
    if reason is None:
        return _clean(replace(state, last_report_at=now), now, policy)
    bad = state.bad_streak + 1
    # a drain is an operator's decision, not a noisy measurement: it takes effect on its first report
    if state.status is Status.UP and bad < policy.down_after and reason != "draining":
        return replace(state, last_report_at=now, good_streak=0, bad_streak=bad)
    return _to(replace(state, last_report_at=now), Status.DOWN, reason, now, good=0, bad=bad)


def _clean(state: Health, now: float, policy: HealthPolicy) -> Health:
    good = state.good_streak + 1
    if state.status is Status.UP:
        return replace(state, good_streak=good, bad_streak=0)
    first_sight = state.status is Status.UNKNOWN and state.transitions == 0
    if first_sight or good >= policy.up_after:
        return _to(state, Status.UP, "ok", now, good=good, bad=0)
    return replace(state, good_streak=good, bad_streak=0)


def _to(state: Health, status: Status, reason: str, now: float, good: int, bad: int) -> Health:
    if state.status is status:
        return replace(state, reason=reason, good_streak=good, bad_streak=bad)
    return replace(state, status=status, reason=reason, good_streak=good, bad_streak=bad,
                   changed_at=now, transitions=state.transitions + 1)


def is_late(state: Health, now: float, policy: HealthPolicy) -> bool:
    """True when a `MISSED` should be observed: reported once, then silent too long."""
    return state.last_report_at is not None and now - state.last_report_at > policy.late_after_s
