"""Demand counted by steering: the pure table (decay by contracts.demand's rule, the cap and the trim,
restore and revaluing) as tables; then real servers — decisions of clients of two sites, hits and misses,
GET /v1/demand decoded with contracts.demand (anonymous 401, no role 403), and a replica SIGTERMed (or
SIGKILLed after a periodic save) and restarted that keeps its counts."""
from __future__ import annotations

import signal
from pathlib import Path

import pytest
import requests

from contracts.callers import new_token
from contracts.demand import DemandReport, decay_to, decode, encode
from contracts.ids import FileKey
from steer_helpers import (AUTH, SITES, ServerThread, SteeringProcess, callers_toml, heartbeat, wait_until,
                           write_setup)
from contracts.demandtable import KEEP, TRIM_ABOVE, DemandTable, decayed, growth
from steering.demand import _read

H = 86400.0
T0 = 1_767_225_600.0


def K(i: int) -> FileKey:
    return FileKey(f"t/{i:05d}.mp4")


# ---- the pure table -------------------------------------------------------------------------------

def counts_at(table: DemandTable, at: float) -> dict:
    return decayed(table.snapshot("t", "steering"), at).regions


def flat(regions: dict) -> dict:
    """{region: {file: (requests, bytes)}} as {(region, file, 0 or 1): number}, for pytest.approx."""
    return {(region, key, i): pair[i] for region, files in regions.items() for key, pair in files.items()
            for i in (0, 1)}


@pytest.mark.parametrize("later_s, factor", [(0, 1.0), (H, 0.5), (2 * H, 0.25), (H / 2, 0.5 ** 0.5)],
                         ids=["now", "one-half-life", "two", "half-of-one"])
def test_counts_decay_by_the_contract_rule(later_s: float, factor: float) -> None:
    table = DemandTable(H, 1000, T0)
    table.add("ams", [K(1)], 1.0, 100.0, T0 + 10)
    got = counts_at(table, T0 + 10 + later_s)["ams"][K(1)]
    assert got == pytest.approx((factor, 100 * factor), rel=1e-5)
    # the same number contracts.demand gives for one count made at T0 + 10
    one = DemandReport("x", "steering", T0 + 10, H, {"ams": {K(1): (1.0, 100.0)}})
    assert got == pytest.approx(decay_to(one, T0 + 10 + later_s)["ams"][K(1)], rel=1e-5)


def test_counts_at_different_times_add_up_decayed() -> None:
    table = DemandTable(H, 1000, T0)
    table.add("ams", [K(1)], 1.0, 0.0, T0)
    table.add("ams", [K(1)], 1.0, 0.0, T0 + H)
    table.add("fra", [K(1), K(2)], 0.5, 0.0, T0 + H)  # a POST of two files: half a play each
    got = counts_at(table, T0 + H)
    assert got["ams"][K(1)][0] == pytest.approx(1.5, rel=1e-5)
    assert flat({"fra": got["fra"]}) == pytest.approx(flat({"fra": {K(1): (0.5, 0.0), K(2): (0.5, 0.0)}}), rel=1e-5)
    assert growth(T0, T0 + H, H) == pytest.approx(2.0)


@pytest.mark.parametrize("cap, pairs, entries, refused", [
    (1000, 999, 999, 0),
    (1000, 1000, 1000, 0),
    (1000, 1001, 1000, 1),
    (1000, 5000, 1000, 4000),
], ids=["under", "at", "one-over", "far-over"])
def test_the_cap_is_never_exceeded(cap: int, pairs: int, entries: int, refused: int) -> None:
    table = DemandTable(H, cap, T0)
    for i in range(pairs):
        table.add(f"s{i % 7}", [K(i)], 1.0, 0.0, T0)
    assert (table.entries, table.dropped) == (entries, refused)
    assert sum(len(f) for f in table.regions.values()) == entries
    table.add("s0", [K(0)], 1.0, 0.0, T0)  # a pair already counted still counts at the cap
    assert counts_at(table, T0)["s0"][K(0)][0] == pytest.approx(2.0, rel=1e-5)


@pytest.mark.parametrize("cap, filled, after", [
    (1000, 900, 900),  # at TRIM_ABOVE: nothing to do
    (1000, 901, 750),  # just over: down to KEEP of the cap
    (1000, 1000, 750),
    (4000, 4000, 3000),
], ids=["at-threshold", "just-over", "full", "bigger"])
def test_a_trim_keeps_the_hottest_pairs(cap: int, filled: int, after: int) -> None:
    table = DemandTable(H, cap, T0)
    for i in range(filled):  # pair i asked for i+1 times, spread over 3 regions
        table.add(f"s{i % 3}", [K(i)], float(i + 1), 0.0, T0)
    assert (TRIM_ABOVE, KEEP) == (0.9, 0.75)  # the table's parameters, as the cases assume
    table.trim()
    assert table.entries == after
    kept = {k for files in table.regions.values() for k in files}
    assert kept == {K(i) for i in range(filled - after, filled)}  # exactly the hottest


def test_a_trim_among_equals_drops_the_oldest_and_frees_room() -> None:
    table = DemandTable(H, 1000, T0)
    for i in range(1000):
        table.add("ams", [K(i)], 1.0, 0.0, T0)
    table.add("ams", [K(5000)], 1.0, 0.0, T0)
    assert table.dropped == 1
    table.trim()
    assert table.entries == 750 and set(table.regions["ams"]) == {K(i) for i in range(250, 1000)}
    table.add("ams", [K(5000)], 1.0, 0.0, T0)  # room again for a new pair
    assert K(5000) in table.regions["ams"]


def test_trim_steps_go_one_region_at_a_time() -> None:
    table = DemandTable(H, 1000, T0)
    for i in range(1000):
        table.add(f"s{i % 4}", [K(i)], float(i), 0.0, T0)
    steps = list(table.trim_steps())
    assert len(steps) == 4 and sum(steps) == 250 and table.entries == 750


def test_rebase_and_reconfigure_keep_the_decayed_counts() -> None:
    table = DemandTable(H, 1000, T0)
    table.add("ams", [K(1)], 3.0, 30.0, T0)
    later = T0 + 100 * H
    assert table.needs_rebase(later)
    before = counts_at(table, later + H)["ams"][K(1)]
    table.rebase(later)
    assert table.base == later and counts_at(table, later + H)["ams"][K(1)] == pytest.approx(before, rel=1e-9)
    table.reconfigure(H / 2, 2000, later)  # a shorter half-life from now on
    assert counts_at(table, later + H)["ams"][K(1)] == pytest.approx((before[0] / 2, before[1] / 2), rel=1e-9)
    assert table.max_entries == 2000


def test_restore_adds_a_saved_report_and_keeps_the_hottest_over_the_cap() -> None:
    saved = DemandReport("r", "steering", T0, H, {"ams": {K(i): (float(i), 0.0) for i in range(1, 1501)}})
    table = DemandTable(H, 1000, T0 + H)
    table.add("ams", [K(1)], 1.0, 0.0, T0 + H)
    table.restore(decode(encode(saved)))
    assert table.entries == 1000
    got = counts_at(table, T0 + H)["ams"]
    assert got[K(1500)][0] == pytest.approx(1500 / 2, rel=1e-5) and got[K(1)][0] == pytest.approx(1.5, rel=1e-5)
    assert K(2) not in got  # the coldest saved pairs did not fit


# ---- real servers ---------------------------------------------------------------------------------

DEMAND_TOML = '\n[demand]\nsource = "{source}"\nsave_interval_s = {save}\n'
AMS, FRA = "192.0.2.55", "198.51.100.7"  # clients inside the ams and fra prefixes (steer_helpers.SITES)


def demand_of(url: str, headers: dict[str, str] | None = AUTH) -> requests.Response:
    return requests.get(url + "/v1/demand", headers=headers, timeout=5)


def steer_get(url: str, file: str, client: str) -> dict:
    r = requests.get(url + "/v1/steer", params={"file": file, "client": client, "explain": 1}, headers=AUTH, timeout=5)
    assert r.status_code in (200, 503), r.text
    return r.json()


def test_decisions_count_per_client_site_hits_and_misses(tmp_path: Path) -> None:
    config = write_setup(tmp_path, health={"missed_reports": 100},
                         extra=DEMAND_TOML.format(source="steer-a", save=3600))
    steer_only, digest = new_token()
    (tmp_path / "callers.toml").write_text(callers_toml() + f'[callers.player]\ntoken_sha256 = "{digest}"\n'
                                                            'roles = ["steer"]\n')
    with ServerThread(config) as srv:
        for site in SITES:
            for i in (1, 2, 3):
                added = ["t/a.mp4"] if f"{site}-{i}" == "ams-1" else []
                assert srv.post_heartbeat(heartbeat(f"{site}-{i}", site, added=added)).status_code == 200
        outcomes = [steer_get(srv.url, "t/a.mp4", AMS)["decision"]["outcome"] for _ in range(2)]
        outcomes.append(steer_get(srv.url, "t/a.mp4", FRA)["decision"]["outcome"])
        assert outcomes == ["hit", "hit", "content-miss"]
        r = requests.post(srv.url + "/v1/steer", json={"client": FRA, "files": ["t/a.mp4", "t/b.mp4"]}, headers=AUTH,
                          timeout=5)
        assert r.status_code == 200
        assert requests.get(srv.url + "/v1/steer", params={"file": "../x", "client": AMS}, headers=AUTH,
                            timeout=5).status_code == 400  # refused before any decision: not counted

        got = demand_of(srv.url)
        assert got.status_code == 200 and got.headers["Content-Type"].startswith("application/json")
        report = decode(got.content)
        assert (report.source, report.kind, report.half_life_s) == ("steer-a", "steering", 86400.0)
        assert flat(report.regions) == pytest.approx(flat({
            "ams": {"t/a.mp4": (2.0, 0.0)},
            "fra": {"t/a.mp4": (1.5, 0.0), "t/b.mp4": (0.5, 0.0)}}), rel=1e-3)

        anonymous = demand_of(srv.url, headers=None)
        assert anonymous.status_code == 401 and anonymous.json()["error"] == "unauthorized"
        player = demand_of(srv.url, headers={"Authorization": f"Bearer {steer_only}"})
        assert player.status_code == 403 and player.json()["error"] == "forbidden"


def _play(url: str) -> None:
    for _ in range(3):
        steer_get(url, "t/a.mp4", AMS)
    steer_get(url, "t/a.mp4", FRA)
    r = requests.post(url + "/v1/steer", json={"client": FRA, "files": ["t/b.mp4", "t/c.mp4", "t/d.mp4", "t/e.mp4"]},
                      headers=AUTH, timeout=5)
    assert r.status_code in (200, 503)


def test_a_replica_sigtermed_and_restarted_keeps_its_counts(tmp_path: Path) -> None:
    config = write_setup(tmp_path, extra=DEMAND_TOML.format(source="steer-b", save=3600))  # only SIGTERM saves
    first = SteeringProcess(config)
    try:
        _play(first.url)
        before = decode(demand_of(first.url).content)
    finally:
        assert first.stop() == 0  # SIGTERM, drained
    assert before.regions["ams"]["t/a.mp4"][0] == pytest.approx(3.0, rel=1e-3)
    assert before.regions["fra"]["t/e.mp4"][0] == pytest.approx(0.25, rel=1e-3)

    second = SteeringProcess(config)
    try:
        after = decode(demand_of(second.url).content)
        assert second.events("demand-restored")[0]["pairs"] == 6
    finally:
        second.stop()
    assert after.source == "steer-b" and after.at > before.at
    assert flat(after.regions) == pytest.approx(flat(decay_to(before, after.at)), rel=1e-4)


def test_a_replica_killed_keeps_what_its_last_periodic_save_held(tmp_path: Path) -> None:
    config = write_setup(tmp_path, extra=DEMAND_TOML.format(source="steer-c", save=0.2))
    first = SteeringProcess(config)
    try:
        _play(first.url)
        saved = wait_until(lambda: _saved_with(tmp_path / "steering-demand", 6), timeout_s=10)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(5)
    finally:
        first.stop()
    second = SteeringProcess(config)
    try:
        after = decode(demand_of(second.url).content)
    finally:
        second.stop()
    assert flat(after.regions) == pytest.approx(flat(decay_to(saved, after.at)), rel=1e-4)
    assert after.regions["ams"]["t/a.mp4"][0] == pytest.approx(3.0, rel=1e-3)


def _saved_with(directory: Path, pairs: int) -> DemandReport | None:
    report = _read(directory)
    if report is None or sum(len(f) for f in report.regions.values()) < pairs:
        return None
    return report
