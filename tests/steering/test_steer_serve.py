"""`steering serve` as a real process: SIGHUP reloads, SIGTERM drains; `check-config` exit codes."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from steer_helpers import AUTH, SITES, SteeringProcess, fleet_toml, heartbeat, wait_until, write_setup


def test_sighup_reloads_and_sigterm_drains(tmp_path: Path) -> None:
    config = write_setup(tmp_path, health={"missed_reports": 100},
                         steering={"reload_check_interval_s": 3600, "drain_grace_s": 0.6})
    steering = SteeringProcess(config)
    try:
        for site in SITES:
            assert steering.post_heartbeat(heartbeat(f"{site}-1", site)).status_code == 200
        (tmp_path / "fleet.toml").write_text(fleet_toml(dict(SITES, par=(48.86, 2.35, ["100.64.0.0/10"]))))
        time.sleep(0.3)
        assert len(requests.get(steering.url + "/v1/fleet", headers=AUTH, timeout=5).json()["sites"]) == 3  # not polled
        steering.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: len(requests.get(steering.url + "/v1/fleet", headers=AUTH, timeout=5).json()["sites"]) == 4)
        assert requests.get(steering.url + "/healthz", timeout=5).json()["up"] == 3  # state kept

        steering.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: requests.get(steering.url + "/healthz", timeout=5).status_code == 503, timeout_s=2)
        assert requests.get(steering.url + "/healthz", timeout=5).json()["status"] == "draining"
        assert requests.get(steering.url + "/v1/steer", params={"file": "t/a.mp4", "client": "192.0.2.1"},
                            headers=AUTH, timeout=5).status_code == 200  # still answering during the grace period
        assert steering.proc.wait(10) == 0
    finally:
        steering.stop()
    events = steering.events()  # every line of stdout is one JSON event, decisions included
    assert {"listening", "reloaded", "draining", "stopped"} <= {e["event"] for e in events}
    assert all(e["service"] == "steering" for e in events)
    decisions = [e for e in events if e["logger"] == "steering.decisions"]
    assert decisions and decisions[-1] | {"ts": 0} == {
        "ts": 0, "level": "info", "service": "steering", "logger": "steering.decisions", "event": "steer",
        "file": "t/a.mp4", "client_prefix": "192.0.2.0/24", "method": "prefix", "outcome": "not-held",
        "site": "ams", "first": "ams-1", "n": 3}


def test_check_config_exit_codes(tmp_path: Path) -> None:
    config = write_setup(tmp_path)
    ok = subprocess.run([sys.executable, "-m", "steering.cli", "check-config", "-c", str(config)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "3 sites, 9 appliances, 5 prefixes" in ok.stdout
    (tmp_path / "fleet.toml").write_text(fleet_toml().replace('latitude = 52.37', 'latitude = 152.37'))
    bad = subprocess.run([sys.executable, "-m", "steering.cli", "check-config", "-c", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "sites[0].latitude: must be at most 90" in bad.stderr
    serve = subprocess.run([sys.executable, "-m", "steering.cli", "serve", "-c", str(config)],
                           capture_output=True, text=True, timeout=60)
    assert serve.returncode == 2 and serve.stderr == ""
    (event,) = [json.loads(line) for line in serve.stdout.splitlines()]  # one JSON line says why
    assert event["event"] == "config-error" and "sites[0].latitude" in event["error"]
