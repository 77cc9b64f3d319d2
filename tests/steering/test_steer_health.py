"""The health state machine: table-driven sequences, then a noisy signal that must not flap."""
from __future__ import annotations

import random

import pytest

from steering.core.health import (MISSED, Health, HealthPolicy, Missed, Status, Vitals, breach, is_late,
                                  observe)

CAP = 10_000
POLICY = HealthPolicy(interval_s=1.0, missed_reports=3, egress_down_fraction=0.9, egress_up_fraction=0.8,
                      max_failed_disk_fraction=0.5, down_after=1, up_after=3)


def v(egress: int = 100, *, accepting: bool = True, draining: bool = False, failed: int = 0, disks: int = 4) -> Vitals:
    return Vitals(accepting=accepting, draining=draining, egress_bps=egress, capacity_bps=CAP,
                  disks_total=disks, disks_failed=failed)


def run(events: list[Vitals | Missed], policy: HealthPolicy = POLICY) -> list[str]:
    state, out = Health(), []
    for t, event in enumerate(events):
        state = observe(state, event, float(t), policy)
        out.append(f"{state.status.value}:{state.reason}")
    return out


@pytest.mark.parametrize("events, expected", [
    ([v()], ["up:ok"]),
    ([v(9500)], ["down:egress-high"]),
    ([v(), v(9100)], ["up:ok", "down:egress-high"]),
    ([v(), v(8999)], ["up:ok", "up:ok"]),
    ([v(), v(draining=True)], ["up:ok", "down:draining"]),
    ([v(), v(accepting=False)], ["up:ok", "down:not-accepting"]),
    ([v(), v(failed=2)], ["up:ok", "up:ok"]),  # half the disks: at the limit, still up
    ([v(), v(failed=3)], ["up:ok", "down:disks-failed"]),
    ([v(), v(failed=1, disks=1)], ["up:ok", "down:disks-failed"]),  # the only disk
    ([v(), MISSED, v(), v(), v()], ["up:ok", "down:missed-reports", "down:missed-reports",
                                     "down:missed-reports", "up:ok"]),
    ([v(), v(9500), v(8500), v(100), v(100), v(100)],
     ["up:ok", "down:egress-high", "down:egress-high", "down:egress-high", "down:egress-high", "up:ok"]),
    ([v(), v(9500), v(100), v(100), v(8500), v(100), v(100), v(100)],
     ["up:ok", "down:egress-high", "down:egress-high", "down:egress-high", "down:egress-high",
      "down:egress-high", "down:egress-high", "up:ok"]),  # a wobble above the low mark restarts the count
    ([MISSED], ["down:missed-reports"]),
], ids=["first-clean-report-up", "first-report-breaching", "egress-over-high-mark", "egress-under-high-mark",
        "draining", "not-accepting", "half-disks-failed", "most-disks-failed", "only-disk-failed",
        "missed-then-hysteresis", "down-needs-low-mark", "streak-restarts", "missed-before-any-report"])
def test_sequences(events: list[Vitals | Missed], expected: list[str]) -> None:
    assert run(events) == expected


def test_down_after_counts_consecutive_breaches() -> None:
    policy = HealthPolicy(interval_s=1, down_after=2, up_after=2)
    assert run([v(), v(9500), v(100), v(9500), v(9500)], policy) == [
        "up:ok", "up:ok", "up:ok", "up:ok", "down:egress-high"]


def test_breach_band() -> None:
    assert breach(v(8500), Status.UP, POLICY) is None
    assert breach(v(8500), Status.DOWN, POLICY) == "egress-high"
    assert breach(Vitals(True, False, 0, 0), Status.UP, POLICY) == "egress-high"  # no capacity


def test_is_late_after_k_intervals() -> None:
    state = observe(Health(), v(), 100.0, POLICY)
    assert not is_late(state, 103.0, POLICY)
    assert is_late(state, 103.01, POLICY)
    assert not is_late(Health(), 1e9, POLICY)  # never reported: nothing to miss
    down = observe(state, MISSED, 104.0, POLICY)
    assert observe(down, MISSED, 105.0, POLICY) is down  # repeated misses change nothing


def test_noisy_load_around_the_high_mark_flaps_far_less_than_one_threshold() -> None:
    """Egress wobbling between 75% and 95% of capacity: a single threshold would change its mind on
    every crossing; the band and the up_after count make transitions rare."""
    rng = random.Random(7)
    state, naive, last_naive = Health(), 0, True
    for t in range(1000):
        egress = int(CAP * rng.uniform(0.75, 0.95))
        state = observe(state, v(egress), float(t), POLICY)
        naive_up = egress <= 0.9 * CAP
        naive += naive_up != last_naive
        last_naive = naive_up
    assert naive > 300
    assert state.transitions < naive / 5


def test_noise_under_the_high_mark_never_flaps_once_up() -> None:
    rng = random.Random(3)
    state = observe(Health(), MISSED, 0.0, POLICY)  # down: missed
    ups = []
    for t in range(1, 500):
        state = observe(state, v(int(CAP * rng.uniform(0.5, 0.89))), float(t), POLICY)
        ups.append(state.status is Status.UP)
    first_up = ups.index(True)
    assert all(ups[first_up:])
    assert state.transitions == 2  # down once, up once


def test_a_drain_takes_effect_on_its_first_report_whatever_down_after_says():
    """down_after smooths noisy measurements; a drain is an operator's decision (oca drain), so the
    first report that says so takes the appliance out of new plays. Back after up_after clean reports."""
    slow = HealthPolicy(interval_s=1.0, down_after=3, up_after=2)
    assert run([v(), v(9500), v(9500)], slow) == ["up:ok", "up:ok", "up:ok"]  # high egress: smoothed
    assert run([v(), v(draining=True), v(draining=True), v(), v()], slow) == [
        "up:ok", "down:draining", "down:draining", "down:draining", "up:ok"]
