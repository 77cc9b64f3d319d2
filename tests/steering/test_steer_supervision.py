"""Steering's background chores never fail silently, and reloads never cost a request: a fleet file
the reloader chokes on fails the `reload` task (logged with its traceback, counted in /metrics,
restarted, degraded in /healthz) until it is fixed; SIGHUPs under a client loop lose no request; a bug
in a handler is a 500, not a 400. Real `steering serve` processes, except the 500 test, which injects
its fault into an in-process server's replica."""
from __future__ import annotations

import logging
import signal
from pathlib import Path

import pytest
import requests

from steer_helpers import AUTH, SITES, ServerThread, SteeringProcess, fleet_toml, heartbeat, wait_until, write_setup
from tests.support.prom import value
from tests.support.reload_load import ClientLoop

STEER = {"file": "t/a.mp4", "client": "192.0.2.1"}


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of /metrics (0 when absent)."""
    return value(requests.get(url + "/metrics", timeout=5).text, name, **labels) or 0.0


def test_a_fleet_file_the_reloader_chokes_on_degrades_until_fixed(tmp_path: Path) -> None:
    config = write_setup(tmp_path, health={"missed_reports": 100})
    steering = SteeringProcess(config)
    try:
        assert steering.post_heartbeat(heartbeat("ams-1", "ams")).status_code == 200
        assert requests.get(steering.url + "/healthz", timeout=5).json()["degraded"] == []
        (tmp_path / "fleet.toml").write_text(fleet_toml().replace("latitude = 52.37", "latitude = 152.37"))

        health = wait_until(lambda: (h := requests.get(steering.url + "/healthz", timeout=5)).json()["degraded"]
                            and h, timeout_s=15)
        assert health.status_code == 200  # still serving the last good fleet: keep it in the pool
        assert health.json()["status"] == "degraded" and health.json()["degraded"] == ["reload"]
        assert metric(steering.url, "steering_task_failures_total", task="reload") >= 3
        assert metric(steering.url, "steering_task_restarts_total", task="reload") >= 2
        assert metric(steering.url, "steering_task_failures_total", task="tick") == 0
        r = requests.get(steering.url + "/v1/steer", params=STEER, headers=AUTH, timeout=5)
        assert r.status_code == 200 and "ams-1." in r.json()["locations"][0]
        failed = steering.events("task-failed")
        assert failed and failed[0]["task"] == "reload" and failed[0]["level"] == "error"
        assert "Traceback" in failed[0]["traceback"] and "sites[0].latitude" in failed[0]["traceback"]

        # fixed (and grown by a site): the restarted task picks it up and the replica is healthy again
        (tmp_path / "fleet.toml").write_text(fleet_toml(dict(SITES, par=(48.86, 2.35, ["100.64.0.0/10"]))))
        wait_until(lambda: requests.get(steering.url + "/healthz", timeout=5).json()["status"] == "ok", timeout_s=40)
        assert len(requests.get(steering.url + "/v1/fleet", headers=AUTH, timeout=5).json()["sites"]) == 4
        assert requests.get(steering.url + "/healthz", timeout=5).json()["up"] == 1  # live state kept
    finally:
        assert steering.stop() == 0


def test_sighup_under_load_loses_no_request(tmp_path: Path) -> None:
    config = write_setup(tmp_path, health={"missed_reports": 100}, steering={"reload_check_interval_s": 3600})
    steering = SteeringProcess(config)

    def steer(s: requests.Session, _: int) -> object:
        return s.get(steering.url + "/v1/steer", params=STEER, headers=AUTH, timeout=5).status_code

    try:
        assert steering.post_heartbeat(heartbeat("ams-1", "ams")).status_code == 200
        with ClientLoop(steer, most=20_000) as clients:  # bounded: stops when told, or after 20 000 requests
            for n in range(1, 6):
                steering.proc.send_signal(signal.SIGHUP)
                wait_until(lambda: metric(steering.url, "steering_reloads_total", result="ok") >= n)
        statuses = clients.outcomes
        assert len(statuses) > 10 and set(statuses) == {200}
        assert len(steering.events("reloaded")) == 5
    finally:
        assert steering.stop() == 0


def test_a_bug_in_a_handler_is_a_500_not_a_400(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with ServerThread(write_setup(tmp_path)) as server:
        def bug(*args: object, **kwargs: object) -> None:
            raise ValueError("a bug, not a bad request")  # the injected fault: a plain ValueError

        server.replica.steer = bug  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="steering"):
            r = requests.get(server.url + "/v1/steer", params=STEER, headers=AUTH, timeout=5)
            post = requests.post(server.url + "/v1/steer", json={"files": ["t/a.mp4"]}, headers=AUTH, timeout=5)
        assert (r.status_code, r.json()["error"]) == (500, "internal")
        assert post.status_code == 500
        assert value(requests.get(server.url + "/metrics").text, "steering_errors_total", reason="internal") == 2
        (record, _) = [rec for rec in caplog.records if rec.getMessage() == "internal-error"]
        assert record.exc_info is not None and "a bug" in str(record.exc_info[1])
        del server.replica.steer  # the fault removed: our own refusals are still 4xx
        bad = requests.get(server.url + "/v1/steer", params={"file": "../x", "client": "192.0.2.1"}, headers=AUTH, timeout=5)
        assert bad.status_code == 400
