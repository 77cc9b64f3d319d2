"""The shipped fill policy's pure pieces (loadtests/offload_sim.py --tune chose their defaults): the room
the planner leaves unplanned for pull-through, admission on the n-th miss, launches valued before their
release date, and the prediction learned from the region's own recent launches."""
from __future__ import annotations

import datetime as dt

import pytest

from contracts.ids import FileKey
from fill.core.model import ApplianceView, CatalogFile, ClusterView, FleetView, PlanPolicy
from fill.core.placement import place_cluster, planned_bytes
from fill.core.plan import plan
from fill.core.popularity import predicted_popularity, with_predictions

TODAY = dt.date(2026, 3, 10)
MB = 1 << 20
DAY = 86400.0


def cf(key: str, size: int = 10 * MB, release: dt.date | None = None) -> CatalogFile:
    return CatalogFile(FileKey(key), size, "0" * 32, key.split("/")[0], release)


def days(n: int) -> dt.date:
    return TODAY + dt.timedelta(days=n)


@pytest.mark.parametrize("tier, fraction, share, expected", [
    (1000, 1.0, 0.0, 1000), (1000, 0.95, 0.0, 950), (1000, 1.0, 0.2, 800), (1000, 0.95, 0.2, 760),
    (1000, 0.5, 0.5, 250), (0, 0.95, 0.3, 0),
], ids=["all", "slack-only", "share-only", "slack-and-share", "half-of-half", "no-tier"])
def test_planned_bytes(tier, fraction, share, expected):
    assert planned_bytes(tier, PlanPolicy(capacity_fraction=fraction, reactive_share=share)) == expected


@pytest.mark.parametrize("fraction, share, placed", [
    (1.0, 0.0, 10), (0.95, 0.0, 9), (1.0, 0.2, 8), (1.0, 0.25, 7), (0.9, 0.5, 4),
], ids=["full", "slack", "share-0.2", "share-0.25", "both"])
def test_reactive_share_leaves_its_room_unplanned(fraction, share, placed):
    """100 MB of SSD, 10 MB files: the manifest fills capacity_fraction x (1 - share) of it, hottest first."""
    apps = [ApplianceView("a1", "http://a1", 100 * MB, 0)]
    files = [cf(f"t{i}/f") for i in range(20)]
    pop = {f.key: float(100 - i) for i, f in enumerate(files)}
    policy = PlanPolicy(copy_thresholds=(), capacity_fraction=fraction, reactive_share=share)
    cp = place_cluster(apps, files, pop, policy)
    assert [p.key for p in cp.placed] == [f.key for f in files[:placed]]
    assert sum(10 * MB for _ in cp.placed) <= planned_bytes(100 * MB, policy)


def test_plan_manifest_respects_the_share_on_both_tiers():
    fleet = FleetView((ClusterView("s", "r", (ApplianceView("a1", "http://a1", 50 * MB, 200 * MB),)),))
    files = [cf(f"t{i}/f") for i in range(40)]
    policy = PlanPolicy(copy_thresholds=(), capacity_fraction=1.0, reactive_share=0.2)
    out = plan(fleet, files, {}, TODAY, policy).files["a1"]
    by_tier = {t: sum(m.size for m in out if m.tier == t) for t in ("ssd", "hdd")}
    assert by_tier == {"ssd": 40 * MB, "hdd": 160 * MB}


@pytest.mark.parametrize("kwargs", [
    {"reactive_share": 1.0}, {"reactive_share": -0.1}, {"capacity_fraction": 0.0}, {"pre_release_weight": 1.5},
    {"learn_days": -1}, {"learn_factor": 0.0},
], ids=["share-1", "share-negative", "fraction-0", "weight-above-1", "learn-days-negative", "factor-0"])
def test_plan_policy_refuses_nonsense(kwargs):
    with pytest.raises(ValueError):
        PlanPolicy(**kwargs)


@pytest.mark.parametrize("observed, learn_days, expected", [
    ({}, 7, 1000.0),  # nothing launched lately here: the configured value
    ({"a/f": 30.0, "b/f": 10.0}, 7, 2.0 * (30 + 10 + 0) / 3),  # 2 x the mean of the last week's (a, b, z)...
    ({"a/f": 30.0, "b/f": 10.0, "c/f": 999.0}, 7, 2.0 * (30 + 10 + 0) / 3),  # ...not today's launch...
    ({"a/f": 30.0, "b/f": 10.0, "old/f": 999.0}, 7, 2.0 * (30 + 10 + 0) / 3),  # ...nor one older than that
    ({"a/f": 30.0, "b/f": 10.0}, 2, 2.0 * 30 / 1),  # only yesterday's within 2 days (b is 3 days old)
    ({"a/f": 30.0, "b/f": 10.0}, 0, 1000.0),  # learning off
], ids=["nothing-to-learn", "mean-of-recent", "not-today", "not-too-old", "shorter-window", "off"])
def test_predicted_popularity_learns_from_recent_launches(observed, learn_days, expected):
    files = [cf("a/f", release=days(-1)), cf("b/f", release=days(-3)), cf("z/f", release=days(-7)),
             cf("c/f", release=TODAY), cf("old/f", release=days(-8)), cf("cat/f")]
    policy = PlanPolicy(predicted_popularity=1000.0, learn_days=learn_days, learn_factor=2.0)
    observed = {FileKey(k): v for k, v in observed.items()}
    assert predicted_popularity(observed, files, TODAY, policy) == pytest.approx(expected)


@pytest.mark.parametrize("release, weight, expected", [
    (days(1), 0.1, 100.0), (days(1), 1.0, 1000.0), (TODAY, 0.1, 1000.0), (days(-1), 0.1, 0.0),
    (days(2), 0.1, 0.0),
], ids=["tomorrow-weighted", "tomorrow-full", "release-day-full", "yesterday-demand-only", "too-early"])
def test_launch_value_around_its_release(release, weight, expected):
    policy = PlanPolicy(predicted_popularity=1000.0, learn_days=0, pre_release_days=1, post_release_days=0,
                        pre_release_weight=weight)
    out = with_predictions({}, [cf("new/f", release=release)], TODAY, policy)
    assert out.get(FileKey("new/f"), 0.0) == pytest.approx(expected)


def test_observed_demand_beats_a_lower_prediction_before_release():
    policy = PlanPolicy(predicted_popularity=1000.0, learn_days=0, pre_release_weight=0.1)
    out = with_predictions({FileKey("new/f"): 500.0}, [cf("new/f", release=days(1))], TODAY, policy)
    assert out[FileKey("new/f")] == 500.0


def test_shipped_defaults():
    """What loadtests/offload_sim.py --tune chose; changing one means re-running it (and the report)."""
    p = PlanPolicy()
    assert (p.pre_release_days, p.post_release_days, p.pre_release_weight, p.learn_days, p.learn_factor,
            p.capacity_fraction, p.reactive_share) == (1, 0, 0.1, 7, 2.0, 0.95, 0.0)
