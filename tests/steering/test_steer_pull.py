"""Pull-through admission through a real steering server: a file only another site holds, asked for by
clients of a site whose appliance reports pull-through, goes to that appliance from the site's n-th miss
on (outcome `pull`), until its inventory shows the file (a hit); a site without a puller, or with the
feature turned off, keeps being sent to the holder."""
from __future__ import annotations

from pathlib import Path

import pytest
import requests

from steer_helpers import AUTH, SITES, ServerThread, heartbeat, write_setup
from tests.support.prom import total

FRA = "198.51.100.7"  # a client of site fra (steer_helpers.SITES)


def steer(url: str, client: str = FRA, file: str = "t/a.mp4") -> dict:
    r = requests.get(url + "/v1/steer", params={"file": file, "client": client, "explain": 1}, headers=AUTH, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def first_host(answer: dict) -> str:
    return answer["decision"]["candidates"][0]["appliance"]


def report_all(srv: ServerThread, pullers: set[str], holders: dict[str, list[str]]) -> None:
    for site in SITES:
        for i in (1, 2, 3):
            a = f"{site}-{i}"
            r = srv.post_heartbeat(heartbeat(a, site, added=holders.get(a, []), pull_through=a in pullers))
            assert r.status_code == 200, r.text


def outcomes(url: str, n: int) -> list[tuple[str, str]]:
    return [(a["decision"]["outcome"], first_host(a)) for a in (steer(url) for _ in range(n))]


def test_the_nth_miss_sends_the_site_to_its_puller_until_it_holds_the_file(tmp_path: Path) -> None:
    config = write_setup(tmp_path, health={"missed_reports": 100},
                         extra="\n[pull_through]\nmisses_to_admit = 3\nhold_s = 3600\n")
    with ServerThread(config) as srv:
        report_all(srv, pullers={"fra-1", "fra-2", "fra-3"}, holders={"ams-1": ["t/a.mp4"]})
        got = outcomes(srv.url, 4)
        assert got[:2] == [("content-miss", "ams-1")] * 2
        assert got[2][0] == got[3][0] == "pull"  # the third miss, and held after it
        puller = got[2][1]
        assert puller.startswith("fra-") and got[3][1] == puller  # the same appliance: rendezvous on the file
        answer = steer(srv.url)
        assert [c["appliance"] for c in answer["decision"]["candidates"]][:2] == [puller, "ams-1"]
        # the puller fetched it: its next report lists the file, and plays are hits there
        r = srv.post_heartbeat(heartbeat(puller, "fra", generation=2, full=False, base=1, added=["t/a.mp4"],
                                         pull_through=True))
        assert r.status_code == 200, r.text
        assert outcomes(srv.url, 1) == [("hit", puller)]
        metrics = requests.get(srv.url + "/metrics", headers=AUTH, timeout=5).text
        assert total(metrics, "steering_decisions_total", outcome="pull") == 3  # the third miss and the two after


@pytest.mark.parametrize("extra, pullers", [
    ("", set()),  # no appliance of fra pulls
    ("\n[pull_through]\nenabled = false\nmisses_to_admit = 1\n", {"fra-1", "fra-2", "fra-3"}),
    ("\n[pull_through]\nmisses_to_admit = 1\n", {"ams-2"}),  # a puller, but in another site
], ids=["no-puller", "turned-off", "puller-elsewhere"])
def test_without_a_puller_of_its_own_the_site_stays_a_content_miss(tmp_path: Path, extra: str, pullers) -> None:
    config = write_setup(tmp_path, health={"missed_reports": 100}, extra=extra)
    with ServerThread(config) as srv:
        report_all(srv, pullers=pullers, holders={"ams-1": ["t/a.mp4"]})
        assert outcomes(srv.url, 10) == [("content-miss", "ams-1")] * 10
