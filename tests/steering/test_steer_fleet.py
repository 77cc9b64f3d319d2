"""The fleet test: `steering serve` and 3 sites x 3 appliance processes, each a real OS process running
oca.reporter.Reporter (tests/steering/reporter_proc.py: its health and inventory come from a JSON file
this test rewrites — the appliance daemon will supply them later).

Stop one appliance: within K x interval + 1 s no answer names it. Start it again with a noisy load
signal: it comes back and does not flap. A file held by only one appliance is steered there first.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from steer_helpers import AUTH, SITES, SteeringProcess, fleet_toml, wait_until, write_setup
from tests.support.prom import value

INTERVAL_S, K, UP_AFTER = 0.3, 3, 3
CAPACITY = 10 * 10**9
HELPER = Path(__file__).with_name("reporter_proc.py")
FILES = [f"t/title-{i}/720p.mp4" for i in range(24)]
APPLIANCES = [f"{site}-{i}" for site in SITES for i in (1, 2, 3)]


def write_state(path: Path, **state: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)  # the reporter never reads a half-written file


class Fleet:
    def __init__(self, folder: Path, steering_url: str) -> None:
        self.folder, self.url = folder, steering_url
        self.procs: dict[str, subprocess.Popen] = {}

    def state_file(self, appliance: str) -> Path:
        return self.folder / f"{appliance}.json"

    def start(self, appliance: str, egress: int = 1000) -> None:
        keys = FILES + (["t/rare.mp4"] if appliance == "lon-2" else [])
        write_state(self.state_file(appliance), egress_bps=egress, capacity_bps=CAPACITY, version=1, keys=keys)
        self.procs[appliance] = subprocess.Popen(
            [sys.executable, str(HELPER), "--id", appliance, "--site", appliance.split("-")[0],
             "--interval", str(INTERVAL_S), "--state", str(self.state_file(appliance)), "--steering", self.url,
             "--keys", str(self.folder / "keys.toml")],
            stdout=subprocess.DEVNULL, stderr=open(self.folder / f"{appliance}.log", "a"))

    def kill(self, appliance: str) -> None:
        proc = self.procs.pop(appliance)
        proc.kill()
        proc.wait(5)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


def named(steering_url: str, client: str = "192.0.2.77") -> set[str]:
    """Every appliance named in the answers for all FILES (one POST: a whole title)."""
    r = requests.post(steering_url + "/v1/steer", json={"client": client, "files": FILES}, headers=AUTH, timeout=5)
    r.raise_for_status()
    return {urlsplit(u).hostname.split(".")[0] for a in r.json()["files"].values() for u in a["locations"]}


def appliance_view(steering_url: str, appliance: str) -> dict:
    fleet = requests.get(steering_url + "/v1/fleet", headers=AUTH, timeout=5).json()
    return next(a for s in fleet["sites"] for a in s["appliances"] if a["id"] == appliance)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory):
    """One fleet for the module: ten interpreters starting on two shared cores take seconds."""
    tmp_path = tmp_path_factory.mktemp("fleet")
    config = write_setup(tmp_path, fleet_toml(SITES), extra="log_decisions = false\n",
                         health={"report_interval_s": INTERVAL_S, "missed_reports": K, "up_after_reports": UP_AFTER,
                                 "egress_down_fraction": 0.9, "egress_up_fraction": 0.8})
    steering = SteeringProcess(config)
    fleet = Fleet(tmp_path, steering.url)
    try:
        for appliance in APPLIANCES:
            fleet.start(appliance)
        wait_until(lambda: requests.get(steering.url + "/healthz", timeout=5).json()["up"] == 9, timeout_s=20)
        yield fleet
    finally:
        fleet.stop_all()
        assert steering.stop() == 0


def test_a_file_held_by_one_appliance_is_steered_there_first(fleet: Fleet) -> None:
    for client, site in (("192.0.2.10", "ams"), ("198.51.100.10", "fra"), ("203.0.113.10", "lon")):
        r = requests.get(fleet.url + "/v1/steer", params={"file": "t/rare.mp4", "client": client, "explain": 1},
                         headers=AUTH, timeout=5).json()
        assert urlsplit(r["locations"][0]).hostname.startswith("lon-2.")
        assert len(r["locations"]) == 3 and r["decision"]["site"] == site
        assert r["decision"]["outcome"] == ("hit" if site == "lon" else "content-miss")
    metrics = requests.get(fleet.url + "/metrics", timeout=5).text
    assert value(metrics, "steering_decisions_total", method="prefix", outcome="content-miss") == 2


def test_stop_one_then_bring_it_back_under_noisy_load(fleet: Fleet) -> None:
    assert "ams-1" in named(fleet.url)
    fleet.kill("ams-1")
    stopped = time.monotonic()
    wait_until(lambda: "ams-1" not in named(fleet.url), timeout_s=K * INTERVAL_S + 1.0, every_s=0.05)
    assert time.monotonic() - stopped <= K * INTERVAL_S + 1.0
    assert appliance_view(fleet.url, "ams-1")["reason"] == "missed-reports"
    assert all("ams-1" not in named(fleet.url) for _ in range(5))

    # Back, with egress wobbling between 60% and 88% of capacity: under the 90% high mark, often
    # above the 80% low mark, so only the hysteresis keeps it from flapping.
    noise, rng = threading.Event(), random.Random(5)
    fleet.start("ams-1", egress=int(0.7 * CAPACITY))

    def wobble() -> None:
        version = 1
        while not noise.is_set():
            write_state(fleet.state_file("ams-1"), egress_bps=int(rng.uniform(0.6, 0.88) * CAPACITY),
                        capacity_bps=CAPACITY, version=version, keys=FILES)
            time.sleep(INTERVAL_S / 3)

    wobbler = threading.Thread(target=wobble)
    wobbler.start()
    try:
        restarted = time.monotonic()
        wait_until(lambda: "ams-1" in named(fleet.url), timeout_s=15, every_s=0.05)
        back_after = time.monotonic() - restarted
        transitions = appliance_view(fleet.url, "ams-1")["transitions"]
        deadline = time.monotonic() + 12 * INTERVAL_S
        while time.monotonic() < deadline:  # stays in the answers, report after noisy report
            assert "ams-1" in named(fleet.url)
            time.sleep(0.05)
        view = appliance_view(fleet.url, "ams-1")
        assert view["status"] == "up" and view["transitions"] == transitions
        assert back_after >= (UP_AFTER - 1) * INTERVAL_S  # not on the first report: hysteresis
    finally:
        noise.set()
        wobbler.join(5)
