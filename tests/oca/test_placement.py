"""Table tests of the pure placement core: decay, mover plans, eviction, disk choice."""
from __future__ import annotations

import math

import pytest

from oca.config import Tier
from oca.core.placement import (DiskSpace, EvictionPlan, FileStat, Move, WritePlan, bump, choose_disk,
                                choose_evictions, decayed, heat, plan_moves, plan_write, tier_order)

SSD, HDD = Tier.SSD, Tier.HDD
H = 100.0  # half-life used by the tables


def f(key, tier=HDD, size=10, heat=0.0, last=0.0, pinned=False, busy=False, disk=None):
    return FileStat(key, tier, disk or f"/{tier.value}", size, heat, last, pinned, busy)


# --- decay ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("score, t, now, expected", [
    (8.0, 0.0, 0.0, 8.0),
    (8.0, 0.0, H, 4.0),
    (8.0, 0.0, 3 * H, 1.0),
    (8.0, 50.0, 50.0 + H / 2, 8.0 / math.sqrt(2)),
    (8.0, 10.0, 5.0, 8.0),  # now before t: never grows
    (0.0, 0.0, 1e9, 0.0),
], ids=["same-time", "one-half-life", "three-half-lives", "half-a-half-life", "clock-behind", "zero"])
def test_decayed(score, t, now, expected):
    assert decayed(score, t, now, H) == pytest.approx(expected)


@pytest.mark.parametrize("score, t, now, amount, expected", [
    (0.0, 0.0, 0.0, 5.0, 5.0),
    (8.0, 0.0, H, 1.0, 5.0),
    (8.0, H, 0.0, 2.0, 9.0),  # a late hit from before t is decayed to t
    (8.0, 0.0, 2 * H, 0.0, 2.0),
], ids=["fresh", "decay-then-add", "hit-older-than-score", "zero-amount"])
def test_bump(score, t, now, amount, expected):
    assert bump(score, t, now, H, amount) == pytest.approx(expected)


@pytest.mark.parametrize("served, size, expected", [(300, 100, 3.0), (0, 100, 0.0), (5, 0, 0.0)],
                         ids=["three-views", "never-served", "empty-file"])
def test_heat(served, size, expected):
    assert heat(served, size) == expected


# --- mover ---------------------------------------------------------------------------------------

MOVE_CASES = [
    # (id, files, ssd capacity, ssd used, high water, budget, expected moves)
    ("promote-hottest-first",
     [f("a", heat=1), f("b", heat=5), f("c", heat=3)], 100, 0, 0.9, 20,
     [Move("b", HDD, SSD, 10), Move("c", HDD, SSD, 10)]),
    ("budget-caps-bytes-copied",
     [f("a", heat=9, size=30), f("b", heat=8, size=30)], 1000, 0, 0.9, 50,
     [Move("a", HDD, SSD, 30)]),
    ("smaller-colder-file-fits-budget",
     [f("big", heat=9, size=60), f("small", heat=8, size=20)], 1000, 0, 0.9, 50,
     [Move("small", HDD, SSD, 20)]),
    ("high-water-respected",
     [f("a", heat=9, size=50), f("b", heat=8, size=50)], 100, 0, 0.9, 1000,
     [Move("a", HDD, SSD, 50)]),  # 0.9 × 100 = 90: room for one
    ("demote-coldest-for-hotter",
     [f("cold", SSD, heat=1), f("warm", SSD, heat=4), f("hot", heat=10)], 20, 20, 1.0, 1000,
     [Move("cold", SSD, HDD, 10), Move("hot", HDD, SSD, 10)]),
    ("hysteresis-blocks-near-equal-swap",
     [f("s", SSD, heat=4.0), f("h", heat=4.8)], 10, 10, 1.0, 1000, []),
    ("hysteresis-allows-clear-winner",
     [f("s", SSD, heat=4.0), f("h", heat=5.1)], 10, 10, 1.0, 1000,
     [Move("s", SSD, HDD, 10), Move("h", HDD, SSD, 10)]),
    ("demotion-counts-against-budget",
     [f("s", SSD, heat=1), f("h", heat=10)], 10, 10, 1.0, 15, []),
    ("several-victims-for-one-big-file",
     [f("s1", SSD, heat=1), f("s2", SSD, heat=2), f("s3", SSD, heat=50), f("h", heat=10, size=20)],
     30, 30, 1.0, 1000,
     [Move("s1", SSD, HDD, 10), Move("s2", SSD, HDD, 10), Move("h", HDD, SSD, 20)]),
    ("busy-files-stay",
     [f("s", SSD, heat=1, busy=True), f("h", heat=10), f("h2", heat=9, busy=True)], 10, 10, 1.0, 1000, []),
    ("pinned-may-be-demoted",
     [f("s", SSD, heat=1, pinned=True), f("h", heat=10)], 10, 10, 1.0, 1000,
     [Move("s", SSD, HDD, 10), Move("h", HDD, SSD, 10)]),
    ("never-served-not-promoted", [f("a", heat=0)], 100, 0, 0.9, 100, []),
    ("over-high-water-needs-more-demotion",
     [f("s1", SSD, heat=1), f("s2", SSD, heat=1), f("h", heat=10)], 20, 25, 1.0, 1000,
     [Move("s1", SSD, HDD, 10), Move("s2", SSD, HDD, 10), Move("h", HDD, SSD, 10)]),
    ("file-larger-than-tier-skipped", [f("a", heat=9, size=500)], 100, 0, 0.9, 10_000, []),
    ("nothing-on-hdd", [f("s", SSD, heat=1)], 100, 10, 0.9, 100, []),
]


@pytest.mark.parametrize("files, capacity, used, high_water, budget, expected",
                         [c[1:] for c in MOVE_CASES], ids=[c[0] for c in MOVE_CASES])
def test_plan_moves(files, capacity, used, high_water, budget, expected):
    assert plan_moves(files, capacity, used, budget, high_water) == expected


def test_plan_moves_is_stable_after_its_own_moves():
    """Applying a plan and planning again moves nothing: no ping-pong."""
    files = [f("s1", SSD, heat=3), f("s2", SSD, heat=6), f("h1", heat=7), f("h2", heat=2)]
    moves = plan_moves(files, 20, 20, 1000, 1.0)
    moved = {m.key: m.dst_tier for m in moves}
    after = [FileStat(x.key, moved.get(x.key, x.tier), "", x.size, x.heat) for x in files]
    assert moves and plan_moves(after, 20, 20, 1000, 1.0) == []


# --- eviction ------------------------------------------------------------------------------------

EVICT_CASES = [
    ("nothing-needed", [f("a")], 0, "lru", EvictionPlan((), 0, True)),
    ("coldest-first", [f("a", heat=3), f("b", heat=1), f("c", heat=2)], 15, "lowest-popularity",
     EvictionPlan(("b", "c"), 20, True)),
    ("heat-tie-oldest-first", [f("a", heat=1, last=5), f("b", heat=1, last=2)], 5, "lowest-popularity",
     EvictionPlan(("b",), 10, True)),
    ("lru-ignores-heat", [f("a", heat=0, last=9), f("b", heat=99, last=1)], 5, "lru",
     EvictionPlan(("b",), 10, True)),
    ("pinned-never", [f("a", pinned=True), f("b", heat=5)], 5, "lowest-popularity",
     EvictionPlan(("b",), 10, True)),
    ("busy-never", [f("a", busy=True), f("b", heat=5)], 5, "lru", EvictionPlan(("b",), 10, True)),
    ("not-enough-evicts-nothing", [f("a"), f("b", pinned=True)], 15, "lru", EvictionPlan((), 0, False)),
    ("exact-fit", [f("a"), f("b", heat=1)], 10, "lowest-popularity", EvictionPlan(("a",), 10, True)),
]


@pytest.mark.parametrize("files, need, policy, expected", [c[1:] for c in EVICT_CASES],
                         ids=[c[0] for c in EVICT_CASES])
def test_choose_evictions(files, need, policy, expected):
    assert choose_evictions(files, need, policy) == expected


def test_unknown_policy_is_an_error():
    with pytest.raises(ValueError, match="policy"):
        choose_evictions([], 1, "random")


# --- disks ---------------------------------------------------------------------------------------

D_SSD1 = DiskSpace("/ssd1", SSD, 100)
D_SSD2 = DiskSpace("/ssd2", SSD, 300)
D_HDD = DiskSpace("/hdd", HDD, 1000)
D_SICK = DiskSpace("/sick", SSD, 10_000, healthy=False)


@pytest.mark.parametrize("disks, size, tier, expected", [
    ([D_SSD1, D_SSD2, D_HDD], 50, SSD, D_SSD2),
    ([D_SSD1, D_SSD2], 200, SSD, D_SSD2),
    ([D_SSD1, D_SSD2], 400, SSD, None),
    ([D_SICK, D_SSD1], 50, SSD, D_SSD1),
    ([D_SSD1, D_HDD], 50, HDD, D_HDD),
    ([], 1, SSD, None),
], ids=["most-free", "only-one-fits", "none-fits", "unhealthy-skipped", "tier-filter", "no-disks"])
def test_choose_disk(disks, size, tier, expected):
    assert choose_disk(disks, size, tier) == expected


@pytest.mark.parametrize("tier, fallback, expected", [
    (None, True, (HDD, SSD)), (None, False, (HDD, SSD)), (SSD, True, (SSD, HDD)), (SSD, False, (SSD,)),
    (HDD, False, (HDD,)),
], ids=["any", "any-no-fallback", "ssd", "ssd-only", "hdd-only"])
def test_tier_order(tier, fallback, expected):
    assert tier_order(tier, fallback) == expected


FULL_SSD = DiskSpace("/ssd", SSD, 5)
FULL_HDD = DiskSpace("/hdd", HDD, 5)
ON_SSD = [f("s-cold", SSD, heat=1, disk="/ssd"), f("s-hot", SSD, heat=9, disk="/ssd")]
ON_HDD = [f("h-cold", HDD, heat=0.5, size=20, disk="/hdd")]

WRITE_CASES = [
    ("room-on-preferred", [D_SSD1, D_HDD], [], 50, SSD, True, WritePlan(D_SSD1)),
    ("fallback-before-evicting", [FULL_SSD, D_HDD], ON_SSD, 50, SSD, True, WritePlan(D_HDD)),
    ("no-fallback-evicts", [FULL_SSD, D_HDD], ON_SSD, 10, SSD, False, WritePlan(FULL_SSD, ("s-cold",))),
    ("evict-on-preferred-first", [FULL_SSD, FULL_HDD], ON_SSD + ON_HDD, 10, SSD, True,
     WritePlan(FULL_SSD, ("s-cold",))),
    ("evict-on-other-tier", [FULL_SSD, FULL_HDD], ON_HDD, 10, SSD, True, WritePlan(FULL_HDD, ("h-cold",))),
    ("any-tier-prefers-hdd", [D_SSD2, D_HDD], [], 10, None, True, WritePlan(D_HDD)),
    ("impossible", [FULL_SSD], [f("p", SSD, pinned=True, disk="/ssd")], 10, SSD, True, None),
    ("unhealthy-never", [D_SICK], [], 10, SSD, True, None),
]


@pytest.mark.parametrize("disks, files, size, tier, fallback, expected", [c[1:] for c in WRITE_CASES],
                         ids=[c[0] for c in WRITE_CASES])
def test_plan_write(disks, files, size, tier, fallback, expected):
    assert plan_write(disks, files, size, tier, "lowest-popularity", fallback) == expected


def test_plan_write_evicts_least_bytes_across_disks():
    a, b = DiskSpace("/a", HDD, 0), DiskSpace("/b", HDD, 8)
    files = [f("a1", size=50, disk="/a"), f("b1", size=10, disk="/b"), f("b2", size=10, disk="/b")]
    assert plan_write([a, b], files, 10, HDD, "lru") == WritePlan(b, ("b1",))
