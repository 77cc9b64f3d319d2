"""Table tests of the agent's pure rules: diff, window, backoff and failover, token bucket, parts."""
from __future__ import annotations

import datetime as dt

import pytest

from contracts.ids import FileKey
from contracts.manifest import ManifestFile, Source, make_manifest
from oca.fill.core.diff import Held, complete, deletions, diff, unknown_files
from oca.fill.core.parts import clip, content_range_ok, covered, merge, missing, plan_parts, split
from oca.fill.core.rate import budget_bps, new_bucket, take, with_rate
from oca.fill.core.retry import Fault, GiveUp, Use, Wait, backoff_s, choose, classify_status, host_of
from oca.fill.core.window import Window, parse_hhmm, state

H = "a" * 32
G = "b" * 32


def mf(key, size=10, xxh3=H, priority=0):
    return ManifestFile(FileKey(key), size, xxh3, "hdd", priority, (Source("origin"),))


def held(key, size=10, xxh3=H):
    return Held(FileKey(key), size, xxh3, "hdd")


M = make_manifest("a1", [mf("x", priority=1), mf("y", priority=0), mf("z", priority=2)], 0.0)


@pytest.mark.parametrize("have, managed, fetch, keep, replace, delete", [
    ({}, set(), ["y", "x", "z"], [], [], []),
    ({"x": held("x"), "y": held("y"), "z": held("z")}, set(), [], ["y", "x", "z"], [], []),
    ({"x": held("x", xxh3=G)}, set(), ["y", "x", "z"], [], ["x"], []),
    ({"x": held("x", size=11)}, set(), ["y", "x", "z"], [], ["x"], []),
    ({"old": held("old"), "mine": held("mine")}, {"old"}, ["y", "x", "z"], [], [], ["old"]),
], ids=["empty", "all-held", "other-hash", "other-size", "only-managed-deleted"])
def test_diff(have, managed, fetch, keep, replace, delete):
    d = diff(M, have, managed)
    assert [f.key for f in d.fetch] == fetch
    assert list(d.keep) == keep and list(d.replace) == replace and list(d.delete_later) == delete


def test_deletions_only_once_complete():
    partial = {"x": held("x"), "old": held("old")}
    assert deletions(M, partial, {"old", "x"}) == ()
    full = {"x": held("x"), "y": held("y"), "z": held("z"), "old": held("old"), "other": held("other")}
    assert complete(M, full)
    assert deletions(M, full, {"old", "x"}) == ("old",)


def test_unknown_files():
    catalog = {"x": (10, H), "y": (10, G)}
    problems = unknown_files(M.files, catalog)
    assert len(problems) == 2 and "'y'" in problems[0] and "'z' is not in the catalog" in problems[1]


@pytest.mark.parametrize("now, inside, left_h, until_h", [
    ("01:00", False, 0, 1), ("02:00", True, 12, 0), ("13:30", True, 0.5, 0), ("14:00", False, 0, 12),
    ("23:00", False, 0, 3),
], ids=["before", "start", "near-end", "end", "night-before"])
def test_window_0200_for_12h(now, inside, left_h, until_h):
    h, m = map(int, now.split(":"))
    st = state(dt.datetime(2026, 3, 10, h, m), Window(parse_hhmm("02:00"), 12 * 3600))
    assert (st.inside, st.remaining_s, st.until_start_s) == (inside, left_h * 3600, until_h * 3600)


@pytest.mark.parametrize("now, shift, inside, left_h", [
    ("23:30", 0, True, 6.5), ("03:00", 0, True, 3), ("06:00", 0, False, 0), ("00:30", 120, True, 7.5),
    ("23:30", 120, False, 0),
], ids=["crosses-midnight-evening", "crosses-midnight-morning", "after", "shifted-late", "shifted-not-yet"])
def test_window_across_midnight_and_shift(now, shift, inside, left_h):
    h, m = map(int, now.split(":"))
    st = state(dt.datetime(2026, 3, 10, h, m), Window(parse_hhmm("22:00"), 8 * 3600, shift))
    assert (st.inside, st.remaining_s) == (inside, left_h * 3600)


@pytest.mark.parametrize("text", ["2:0", "24:00", "ab:cd", "0200", "12:60"])
def test_bad_hhmm(text):
    with pytest.raises(ValueError):
        parse_hhmm(text)


@pytest.mark.parametrize("status, fault", [(404, Fault.NOT_HERE), (410, Fault.NOT_HERE), (416, Fault.BAD_CONTENT),
                                           (403, Fault.HOST), (500, Fault.HOST), (503, Fault.HOST), (429, Fault.HOST)])
def test_classify(status, fault):
    assert classify_status(status) is fault


@pytest.mark.parametrize("n, jitter, expected", [(0, 0.5, 0.0), (1, 0.0, 0.5), (1, 0.999999, 1.0), (3, 0.0, 2.0),
                                                 (20, 0.0, 30.0)],
                         ids=["none", "first-low", "first-high", "third", "capped"])
def test_backoff(n, jitter, expected):
    assert backoff_s(n, 1.0, 60.0, jitter) == pytest.approx(expected, abs=1e-5)


PEER = Source("peer", url="http://p1:8080/k", appliance="p1")
ORIGIN = Source("origin", s3="s3://media/k")


@pytest.mark.parametrize("excluded, retry_at, now, verdict", [
    (set(), {}, 0.0, Use(0)),
    ({0}, {}, 0.0, Use(1)),
    (set(), {"http://p1:8080": 5.0}, 0.0, Use(1)),
    (set(), {"http://p1:8080": 5.0, "s3://media": 3.0}, 1.0, Wait(2.0)),
    ({0, 1}, {}, 0.0, GiveUp("every source failed or lacks the file")),
], ids=["peer-first", "peer-excluded", "peer-backing-off", "all-backing-off", "nothing-left"])
def test_choose(excluded, retry_at, now, verdict):
    assert choose([PEER, ORIGIN], excluded, retry_at, now) == verdict


def test_host_of():
    assert host_of(PEER) == "http://p1:8080" and host_of(ORIGIN) == "s3://media"
    assert host_of(Source("origin")) == "origin"


def test_token_bucket_average_rate():
    b = new_bucket(1000.0, 0.0, burst_s=1.0)  # 1000 B/s, burst floor 1 MiB
    b, wait = take(b, 1 << 20, 0.0)
    assert wait == 0.0
    b, wait = take(b, 2000, 0.0)
    assert wait == pytest.approx(2.0)
    b2 = with_rate(b, 0.0, 0.0)
    assert take(b2, 10**9, 0.0)[1] == 0.0  # unlimited


@pytest.mark.parametrize("egress, capacity, want", [
    (None, None, 1000.0), (0, 100, 1000.0), (50, 100, 1000.0), (75, 100, 550.0), (100, 100, 100.0),
    (200, 100, 100.0),
], ids=["unknown", "idle", "at-threshold", "half-way", "full", "over"])
def test_budget(egress, capacity, want):
    assert budget_bps(1000.0, egress, capacity, 0.5, 0.1) == pytest.approx(want)


@pytest.mark.parametrize("size, done, part, expected", [
    (10, [], 4, [(0, 4), (4, 8), (8, 10)]),
    (10, [(0, 5)], 4, [(5, 9), (9, 10)]),
    (10, [(2, 4), (6, 8)], 100, [(0, 2), (4, 6), (8, 10)]),
    (10, [(0, 10)], 4, []),
    (0, [], 4, []),
], ids=["fresh", "prefix-done", "holes", "all-done", "empty-file"])
def test_plan_parts(size, done, part, expected):
    assert plan_parts(size, done, part) == expected


def test_range_helpers():
    assert merge([(5, 7), (0, 2), (2, 3), (6, 9)]) == [(0, 3), (5, 9)]
    assert clip([(0, 5), (8, 12)], 10) == [(0, 5), (8, 10)]
    assert covered([(0, 5), (3, 8)]) == 8
    assert missing(10, [(3, 4)]) == [(0, 3), (4, 10)]
    assert split([(0, 3)], 1) == [(0, 1), (1, 2), (2, 3)]


@pytest.mark.parametrize("header, ok", [("bytes 0-9/100", True), ("bytes 0-9/101", False), ("bytes 1-9/100", False),
                                        (None, False), ("bytes */100", False), ("items 0-9/100", False)])
def test_content_range(header, ok):
    assert content_range_ok(header, 0, 10, 100) is ok
