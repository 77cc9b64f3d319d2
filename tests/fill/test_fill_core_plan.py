"""The planner: popularity per region, predictions for launches, copies, rendezvous placement within
SSD/HDD capacity (hottest on SSD), sources (local holders, then origin), and build_manifests."""
from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import replace

import pytest

from contracts.ids import ApplianceId, FileKey
from contracts.manifest import decode_manifest, encode_manifest, make_manifest
from fill.core.model import ApplianceView, CatalogFile, ClusterView, FleetView, OriginRef, PlanPolicy
from fill.core.placement import place_cluster, rendezvous_order, seed_of
from fill.core.plan import plan, sources_for
from fill.core.popularity import copies_for, is_launching, region_popularity, with_predictions
from fill.service import build_manifests, manifest_reply, view_from_state

TODAY = dt.date(2026, 3, 10)
MB = 1 << 20


def app(name: str, ssd: int | None = 100 * MB, hdd: int | None = 1000 * MB, weight: float = 1.0) -> ApplianceView:
    return ApplianceView(ApplianceId(name), f"http://{name}:8080", ssd, hdd, weight)


def cf(key: str, size: int = 10 * MB, release: dt.date | None = None) -> CatalogFile:
    return CatalogFile(FileKey(key), size, "0" * 32, key.split("/")[0], release)


@pytest.mark.parametrize("reports, expected", [
    ({"a1": {"f": (3.0, 30.0)}, "a2": {"f": (1.0, 10.0)}}, {"r1": {"f": 4.0}}),
    ({"a1": {"f": (3.0, 30.0)}, "b1": {"f": (1.0, 20.0)}}, {"r1": {"f": 3.0}, "r2": {"f": 2.0}}),
    ({"zz": {"f": (3.0, 30.0)}}, {}),
    ({"a1": {"unknown": (3.0, 30.0), "f": (0.0, 0.0)}}, {"r1": {}}),
], ids=["summed-in-region", "regions-apart", "appliance-not-in-fleet", "unknown-file-and-zero"])
def test_region_popularity(reports, expected):
    region_of = {"a1": "r1", "a2": "r1", "b1": "r2"}
    assert region_popularity(reports, region_of, {"f": 10}) == expected


@pytest.mark.parametrize("release, launching", [
    (None, False), (TODAY, True), (TODAY + dt.timedelta(days=7), True), (TODAY + dt.timedelta(days=8), False),
    (TODAY - dt.timedelta(days=2), True), (TODAY - dt.timedelta(days=3), False),
], ids=["no-date", "today", "in-7-days", "in-8-days", "2-days-ago", "3-days-ago"])
def test_launch_window(release, launching):
    assert is_launching(release, TODAY, PlanPolicy(pre_release_days=7, post_release_days=2)) is launching


def test_predictions_raise_but_never_lower():
    files = [cf("new/a", release=TODAY + dt.timedelta(days=3)), cf("hit/a", release=TODAY)]
    policy = PlanPolicy(predicted_popularity=800.0, pre_release_days=7, pre_release_weight=1.0)
    out = with_predictions({"hit/a": 5000.0}, files, TODAY, policy)
    assert out == {"new/a": 800.0, "hit/a": 5000.0}


@pytest.mark.parametrize("pop, size, copies", [
    (0.0, 4, 1), (49.9, 4, 1), (50.0, 4, 2), (500.0, 4, 3), (10**6, 4, 4), (10**6, 2, 2), (10**6, 0, 0),
], ids=["cold", "below-first", "first", "second", "max", "capped-by-cluster", "empty-cluster"])
def test_copies(pop, size, copies):
    assert copies_for(pop, PlanPolicy(copy_thresholds=(50.0, 500.0, 5000.0)), size) == copies


def test_rendezvous_matches_steering_hash():
    from steering.core.hashing import rendezvous_sort, seed_of as steering_seed

    class Spec:
        def __init__(self, name, cap):
            self.id, self.seed, self.capacity_bps = name, steering_seed(name), cap

    apps = [app(f"a{i}", weight=float(10 + i)) for i in range(5)]
    for i in range(50):
        key = f"t{i}/v/1080p.mp4"
        ours = [a.id for a in rendezvous_order(key, apps)]
        theirs = [s.id for s in rendezvous_sort([Spec(a.id, a.weight) for a in apps], key.encode())]
        assert ours == theirs
    assert seed_of("a1") == steering_seed("a1")


def test_rendezvous_spreads_and_moves_little():
    apps = [app(f"a{i}") for i in range(4)]
    keys = [f"t{i}/f.mp4" for i in range(2000)]
    first = Counter(rendezvous_order(k, apps)[0].id for k in keys)
    assert min(first.values()) > 400  # ~500 each
    fewer = apps[:3]
    moved = sum(rendezvous_order(k, apps)[0].id != rendezvous_order(k, fewer)[0].id for k in keys)
    assert moved == first["a3"]  # only the removed member's files move


def test_placement_hottest_on_ssd_and_capacity_respected():
    apps = [app("a1", ssd=30 * MB, hdd=50 * MB), app("a2", ssd=30 * MB, hdd=50 * MB)]
    files = [cf(f"t{i}/f") for i in range(20)]
    pop = {f.key: float(100 - i) for i, f in enumerate(files)}
    cp = place_cluster(apps, files, pop, PlanPolicy(copy_thresholds=(), capacity_fraction=1.0))
    per = {a.id: [p for p in cp.placed if p.appliance == a.id] for a in apps}
    for a in apps:
        ssd = [p for p in per[a.id] if p.tier == "ssd"]
        hdd = [p for p in per[a.id] if p.tier == "hdd"]
        assert len(ssd) == 3 and len(hdd) == 5  # 10 MB files: 30 MB SSD, 50 MB HDD
        assert max(p.rank for p in ssd) < min(p.rank for p in hdd)  # hottest on SSD
    assert len(cp.placed) == 16 and len(cp.left_out) == 4
    assert set(cp.left_out) == {f.key for f in files[16:]}  # the coldest are left out


def test_copies_spill_past_full_appliances():
    apps = [app("a1", ssd=0, hdd=0), app("a2"), app("a3")]
    files = [cf("hot/f")]
    cp = place_cluster(apps, files, {"hot/f": 10**6}, PlanPolicy(copy_thresholds=(1.0, 2.0)))
    assert sorted(p.appliance for p in cp.placed) == ["a2", "a3"]
    assert cp.short == ("hot/f",)  # wanted 3, only 2 have room


def test_unknown_capacity_gets_no_plan():
    fleet = FleetView((ClusterView("s", "r", (app("a1"), app("a2", ssd=None, hdd=None))),))
    result = plan(fleet, [cf("t/f")], {}, TODAY)
    assert set(result.files) == {"a1"}


def test_sources_local_holders_then_origin():
    cluster = ClusterView("s", "r", (app("a1"), app("a2"), app("a3")))
    remote = [app("b1")]
    policy = PlanPolicy(remote_peers=False, origin=OriginRef(s3_bucket="media", s3_prefix="p"))
    srcs = sources_for(FileKey("t/f"), ApplianceId("a1"), cluster, remote, {"a1", "a3", "b1"}, policy)
    assert [(s.kind, s.appliance) for s in srcs] == [("peer", "a3"), ("origin", None)]
    assert srcs[0].url == "http://a3:8080/t/f" and srcs[1].s3 == "s3://media/p/t/f"
    tier = PlanPolicy(remote_peers=True, origin=OriginRef(url="http://o:8070"))
    srcs = sources_for(FileKey("t/f"), ApplianceId("a1"), cluster, remote, {"b1"}, tier)
    assert [(s.kind, s.appliance, s.url) for s in srcs] == [("peer", "b1", "http://b1:8080/t/f"),
                                                            ("origin", None, "http://o:8070/t/f")]


def _escalation_fleet(holders: dict) -> FleetView:
    return FleetView((
        ClusterView("sa", "ra", (app("a1"), app("a2"))),
        ClusterView("sb", "rb", (app("b1"), app("b2"))),
    ), {FileKey(k): frozenset(v) for k, v in holders.items()})


def _chains(fleet: FleetView, policy: PlanPolicy) -> dict[str, list[str]]:
    """Each appliance's sources for the one file, as 'peer:ID' / 'wait:ID' / 'origin'."""
    result = plan(fleet, [cf("t/f")], {}, TODAY, replace(policy, copy_thresholds=(), min_copies=2))
    out = {}
    for a, files in result.files.items():
        for f in files:
            out[a] = [("wait:" if s.wait_s else "peer:") + s.appliance if s.kind == "peer" else "origin"
                      for s in f.sources]
            assert all(s.wait_s in (0.0, policy.escalate_after_s) for s in f.sources)
    return out


def _leader(site: str, fleet: FleetView) -> tuple[str, str]:
    """The site's leader for t/f (its rendezvous-first appliance) and the other one."""
    cluster = next(c for c in fleet.clusters if c.site == site)
    first, second = rendezvous_order("t/f", cluster.appliances)
    return first.id, second.id


def test_escalation_nobody_holds_it_one_origin_fetch_for_the_fleet():
    fleet = _escalation_fleet({})
    chains = _chains(fleet, PlanPolicy())
    la, fa = _leader("sa", fleet)
    lb, fb = _leader("sb", fleet)
    root = rendezvous_order("t/f", [app(la), app(lb)])[0].id
    other_leader = lb if root == la else la
    root_peer = fa if root == la else fb
    other_peer = fb if root == la else fa
    assert chains[root] == ["origin"]  # the one fetch from outside
    assert chains[root_peer] == [f"wait:{root}", "origin"]
    assert chains[other_leader] == [f"wait:{root}", "origin"]  # tier: 2 hops
    assert chains[other_peer] == [f"wait:{root}", "origin"]  # its leader is 2 hops: a 3rd is over the limit


def test_escalation_a_longer_hop_limit_chains_through_the_site_leader():
    fleet = _escalation_fleet({})
    chains = _chains(fleet, PlanPolicy(hop_limit=3))
    la, fa = _leader("sa", fleet)
    lb, fb = _leader("sb", fleet)
    root = rendezvous_order("t/f", [app(la), app(lb)])[0].id
    other_leader, other_peer = (lb, fb) if root == la else (la, fa)
    assert chains[other_peer] == [f"wait:{other_leader}", f"wait:{root}", "origin"]


@pytest.mark.parametrize("policy, expect_peer", [
    (PlanPolicy(), ["wait:LEADER", "peer:a1", "origin"]),
    (PlanPolicy(hop_limit=1), ["peer:a1", "origin"]),
    (PlanPolicy(remote_peers=False), ["wait:LEADER", "origin"]),
], ids=["default", "no-waiting", "no-tier"])
def test_escalation_held_in_another_site(policy, expect_peer):
    fleet = _escalation_fleet({"t/f": {"a1"}})
    chains = _chains(fleet, policy)
    lb, fb = _leader("sb", fleet)
    assert chains[lb] == (["peer:a1", "origin"] if policy.remote_peers else ["origin"])
    assert chains[fb] == [s.replace("LEADER", lb) for s in expect_peer]
    assert chains["a2"] == ["peer:a1", "origin"]  # a local holder: no waiting


def test_escalation_sources_round_trip_the_manifest():
    fleet = _escalation_fleet({})
    result = plan(fleet, [cf("t/f")], {}, TODAY, PlanPolicy(copy_thresholds=(), min_copies=2))
    manifests = [make_manifest(a, files, 1_773_100_800.0) for a, files in result.files.items()]
    for m in manifests:
        again = decode_manifest(encode_manifest(m))
        assert again.files == m.files and again.version == m.version
    assert any(s.wait_s for m in manifests for f in m.files for s in f.sources)


@pytest.mark.parametrize("kwargs", [{"hop_limit": 0}, {"hop_limit": 9}, {"escalate_after_s": 0.0}],
                         ids=["no-hops", "too-many-hops", "no-wait"])
def test_escalation_policy_refuses_nonsense(kwargs):
    with pytest.raises(ValueError):
        PlanPolicy(**kwargs)


def _fleet(holders=None) -> FleetView:
    return FleetView((
        ClusterView("ams", "nl", (app("ams-1"), app("ams-2"))),
        ClusterView("fra", "de", (app("fra-1"), app("fra-2"))),
    ), holders or {})


def test_plan_per_region_popularity_and_new_release():
    files = [cf("a/f"), cf("b/f"), cf("new/f", release=TODAY + dt.timedelta(days=1))]
    reports = {"ams-1": {"a/f": (1, 10**6 * 10 * MB)}, "fra-1": {"b/f": (1, 10**6 * 10 * MB)}}
    policy = PlanPolicy(copy_thresholds=(100.0,), predicted_popularity=50.0)
    result = plan(_fleet(), files, reports, TODAY, policy)
    ams = {a: [f.key for f in result.files[a]] for a in ("ams-1", "ams-2")}
    # a/f is hot in nl: two copies there, first in priority; the launch (tomorrow: pre_release_weight of
    # its prediction) comes next, then b/f.
    assert all(keys[0] == "a/f" for keys in ams.values())
    fra = {a: [f.key for f in result.files[a]] for a in ("fra-1", "fra-2")}
    assert all(keys[0] == "b/f" for keys in fra.values())
    assert result.popularity["nl"]["new/f"] == 50.0 * policy.pre_release_weight
    for fs in result.files.values():
        assert [f.priority for f in fs] == list(range(len(fs)))


def test_build_manifests_deterministic_and_valid():
    files = [cf(f"t{i}/f", size=(i + 1) * MB) for i in range(30)]
    holders = {FileKey("t3/f"): {ApplianceId("ams-2")}}
    one = build_manifests(_fleet(holders), files, {}, 1773100000.0)
    two = build_manifests(_fleet(holders), list(reversed(files)), {}, 1773100000.0)
    assert {a: m.version for a, m in one.items()} == {a: m.version for a, m in two.items()}
    for a, m in one.items():
        assert decode_manifest(encode_manifest(m), a) == m
    t3 = [f for f in one["ams-1"].files if f.key == "t3/f"]
    if t3:
        assert t3[0].sources[0].kind == "peer" and t3[0].sources[0].appliance == "ams-2"


@pytest.mark.parametrize("inm, status", [(None, 200), ('"other"', 200), ("MATCH", 304), ("*", 304),
                                        ('"x", W/MATCH', 304)],
                         ids=["none", "other", "match", "star", "weak-in-list"])
def test_manifest_reply(inm, status):
    m = build_manifests(_fleet(), [cf("t/f")], {}, 1.0)["ams-1"]
    header = inm.replace("MATCH", m.etag) if inm else None
    reply = manifest_reply(m, header)
    assert reply.status == status and reply.headers["ETag"] == m.etag
    assert (reply.body != b"") == (status == 200)
    assert manifest_reply(None, None).status == 404


def test_view_from_state_duck_types_steering():
    from contracts.heartbeat import DiskReport, DiskState, HealthSnapshot, Load

    class Spec:
        def __init__(self, id):
            self.id, self.base_url, self.capacity_bps = id, f"http://{id}", 10**10

    class Site:
        def __init__(self, id, apps):
            self.id, self.appliances = id, tuple(Spec(a) for a in apps)

    class Report:
        def __init__(self, disks):
            self.health = HealthSnapshot(True, False, Load(0.1, 1), 0, 1, tuple(disks))

    reports = {"x1": Report([DiskReport("/s", "ssd", DiskState.OK, 100, 50, 1),
                             DiskReport("/h", "hdd", DiskState.OK, 1000, 500, 1),
                             DiskReport("/h2", "hdd", DiskState.FAILED, 1000, 0, 0)])}
    view = view_from_state([Site("s1", ["x1", "x2"])], reports, {}, {"s1": "nl"})
    (cluster,) = view.clusters
    assert cluster.region == "nl"
    assert [(a.id, a.ssd_bytes, a.hdd_bytes, a.weight) for a in cluster.appliances] == [
        ("x1", 100, 1000, 1e10), ("x2", None, None, 1e10)]


def test_demand_lets_an_unheld_file_become_popular():
    fleet = FleetView((ClusterView("s", "nl", (app("a1", ssd=11 * MB, hdd=0),)),))
    files = [cf("held/f"), cf("missed/f")]
    reports = {"a1": {"held/f": (1.0, 5.0 * 10 * MB)}}
    assert [f.key for f in plan(fleet, files, reports, TODAY).files["a1"]] == ["held/f"]
    demand = {"nl": {"missed/f": 50.0, "held/f": 1.0}}
    assert [f.key for f in plan(fleet, files, reports, TODAY, demand=demand).files["a1"]] == ["missed/f"]
