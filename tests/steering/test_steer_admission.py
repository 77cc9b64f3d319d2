"""Pull-through admission (steering.core.admission): the n-th miss rule, table-tested, and the ledger
that applies it per (site, file) in bounded memory."""
from __future__ import annotations

import dataclasses

import pytest

from steering.core.admission import Admission, MissLedger, PullPolicy, admit_on_miss

DAY = 86400.0


@pytest.mark.parametrize("n, previous, now, admit, kept", [
    (1, (), 100.0, True, ()),
    (2, (), 100.0, False, (100.0,)),
    (2, (50.0,), 100.0, True, ()),
    (2, (100.0 - DAY,), 100.0, False, (100.0,)),  # the first miss is a day old: forgotten
    (3, (10.0,), 100.0, False, (10.0, 100.0)),
    (3, (10.0, 20.0), 100.0, True, ()),
    (3, (10.0 - DAY, 20.0), 100.0, False, (20.0, 100.0)),
    (8, tuple(float(i) for i in range(6)), 100.0, False, tuple(float(i) for i in range(6)) + (100.0,)),
    (8, tuple(float(i) for i in range(7)), 100.0, True, ()),
], ids=["every-miss", "first-of-two", "second-of-two", "second-too-late", "second-of-three", "third-of-three",
        "oldest-expired", "seventh-of-eight", "eighth-of-eight"])
def test_admit_on_the_nth_miss_within_the_window(n, previous, now, admit, kept):
    assert admit_on_miss(previous, now, PullPolicy(misses_to_admit=n, window_s=DAY)) == Admission(admit, kept)


def test_admission_remembers_at_most_what_it_needs():
    policy = PullPolicy(misses_to_admit=3, window_s=1000.0)
    state: tuple[float, ...] = ()
    verdicts = []
    for t in (0.0, 2000.0, 2500.0, 2600.0, 2700.0):
        v = admit_on_miss(state, t, policy)
        state = v.misses
        verdicts.append(v.admit)
        assert len(state) <= policy.misses_to_admit - 1
    assert verdicts == [False, False, False, True, False]  # the third miss within 1000 s is at 2600


@pytest.mark.parametrize("kwargs", [{"misses_to_admit": 0}, {"window_s": 0.0}], ids=["zero-misses", "no-window"])
def test_pull_policy_refuses_nonsense(kwargs):
    with pytest.raises(ValueError):
        PullPolicy(**kwargs)


def test_shipped_pull_policy():
    """What loadtests/offload_sim.py --tune chose; changing it means re-running it (and the report)."""
    assert dataclasses.astuple(PullPolicy()) == (8, 86400.0)


def test_the_ledger_admits_a_site_on_its_nth_miss_and_holds_the_admission():
    ledger = MissLedger(PullPolicy(misses_to_admit=3, window_s=100.0), hold_s=30.0, max_entries=10)
    assert [ledger.miss("sb", "t/a.mp4", t) for t in (0.0, 1.0)] == [False, False]
    assert ledger.miss("sa", "t/a.mp4", 2.0) is False  # another site counts on its own
    assert ledger.miss("sb", "t/b.mp4", 2.0) is False  # and another file
    assert ledger.miss("sb", "t/a.mp4", 3.0) is True  # the third within 100 s
    assert ledger.miss("sb", "t/a.mp4", 20.0) is True  # still held: the inventory has not shown it yet
    assert ledger.miss("sb", "t/a.mp4", 40.0) is False  # hold over and still a miss: counting again


@pytest.mark.parametrize("cap", [1, 2, 5])
def test_the_ledger_never_holds_more_than_its_cap(cap):
    ledger = MissLedger(PullPolicy(misses_to_admit=2, window_s=DAY), hold_s=60.0, max_entries=cap)
    for i in range(50):
        ledger.miss("s", f"t/{i}.mp4", float(i))
        ledger.miss("s", f"t/{i}.mp4", float(i))  # admitted: moves to the admissions
        ledger.miss("s", f"u/{i}.mp4", float(i))
        assert len(ledger) <= 2 * cap


def test_a_forgotten_pair_starts_counting_again():
    ledger = MissLedger(PullPolicy(misses_to_admit=2, window_s=DAY), hold_s=0.0, max_entries=1)
    assert ledger.miss("s", "t/a.mp4", 0.0) is False
    assert ledger.miss("s", "t/b.mp4", 1.0) is False  # pushes a out
    assert ledger.miss("s", "t/a.mp4", 2.0) is False  # a's first miss again
    assert ledger.miss("s", "t/a.mp4", 3.0) is True


@pytest.mark.parametrize("hold_s, cap", [(-1.0, 10), (1.0, 0)], ids=["negative-hold", "no-room"])
def test_the_ledger_refuses_nonsense(hold_s, cap):
    with pytest.raises(ValueError):
        MissLedger(PullPolicy(), hold_s, cap)
