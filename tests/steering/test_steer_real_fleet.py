"""The fleet test with the real appliance daemon: `steering serve` and 3 sites x 3 `oca serve`
processes reporting with oca.inventory / oca.reporter. A file held by one appliance only is steered
there first and its signed URL really streams from it; an appliance killed with SIGKILL disappears
from every answer within K x interval + 1 s and comes back when restarted."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from steer_helpers import AUTH, SITES, SteeringProcess, fleet_toml, free_port, wait_until, write_setup
from tests.oca.conftest import Appliance, write_config

INTERVAL_S, K = 0.5, 3
COMMON = "t/common/720p.mp4"
RARE = "t/rare/720p.mp4"


def start_appliance(root: Path, name: str, port: int, steering_url: str, keys: Path) -> Appliance:
    root.mkdir()
    # Provisioned as an ISP engineer would: the appliance's own keys, derived from steering's master.
    subprocess.run([sys.executable, "-m", "steering.cli", "keys", "derive", "--master", str(keys),
                    "--appliance", name, "-o", str(root / "keys.toml")], check=True, capture_output=True, timeout=60)
    config = write_config(root, extra=f'\n[steering]\nurls = ["{steering_url}"]\nreport_interval_s = {INTERVAL_S}\n')
    text = config.read_text().replace('id = "test-oca"', f'id = "{name}"').replace('site = "lab"',
                                                                                  f'site = "{name[:3]}"')
    config.write_text(text.replace("port = 0", f"port = {port}", 1))
    app = Appliance(root, config)
    app.start()
    return app


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("realfleet")
    ports = {f"{s}-{i}": free_port() for s in SITES for i in (1, 2, 3)}
    config = write_setup(folder, fleet_toml(SITES, base=lambda a: f"http://127.0.0.1:{ports[a]}"),
                         extra="log_decisions = false\n",
                         health={"report_interval_s": INTERVAL_S, "missed_reports": K, "up_after_reports": 2})
    steering = SteeringProcess(config)
    apps: dict[str, Appliance] = {}
    try:
        for name, port in ports.items():
            apps[name] = start_appliance(folder / name, name, port, steering.url, folder / "keys.toml")
            apps[name].put(b"c" * 4096, COMMON)
        apps["lon-2"].put(os.urandom(50_000), RARE)
        wait_until(lambda: requests.get(steering.url + "/healthz", timeout=5).json()["up"] == 9, timeout_s=30)
        yield steering, apps, ports
    finally:
        for app in apps.values():
            if app.proc is not None and app.proc.poll() is None:
                app.proc.send_signal(signal.SIGTERM)
        for app in apps.values():
            try:
                app.proc.wait(15)
            except Exception:
                app.proc.kill()
        steering.stop()


def steer(url: str, key: str, client: str) -> list[str]:
    r = requests.get(url + "/v1/steer", params={"file": key, "client": client}, headers=AUTH, timeout=5)
    r.raise_for_status()
    return r.json()["locations"]


def port_of(location: str) -> int:
    return urlsplit(location).port or 80


def test_rare_file_is_steered_to_its_holder_and_streams(fleet):
    steering, apps, ports = fleet
    wait_until(lambda: port_of(steer(steering.url, RARE, "192.0.2.10")[0]) == ports["lon-2"], timeout_s=10)
    elsewhere = steer(steering.url, RARE, "192.0.2.10")[0]  # bound to the client's /24: not ours
    assert requests.get(elsewhere, timeout=5).headers["X-Oca-Reason"] == "wrong-client"
    first = steer(steering.url, RARE, "127.0.0.1")[0]  # localised to the default site, still lon-2 first
    assert port_of(first) == ports["lon-2"]
    # The workers follow the index within a second of the heartbeat that announced the file.
    resp = wait_until(lambda: (r := requests.get(first, headers={"Range": "bytes=0-99"}, timeout=5)).status_code
                      == 206 and r, timeout_s=5)
    assert len(resp.content) == 100
    held = (apps["lon-2"].ssd / RARE) if (apps["lon-2"].ssd / RARE).exists() else apps["lon-2"].hdd / RARE
    assert resp.content == held.read_bytes()[:100]


def test_a_url_signed_for_one_appliance_opens_no_other(fleet):
    """Steering signs each appliance's URL with the keys derived for it: the same path and token
    sent to another appliance that holds the file is refused there (what a stolen appliance's keys,
    or a URL copied to another host, are worth)."""
    steering, apps, ports = fleet
    urls = steer(steering.url, COMMON, "127.0.0.1")
    assert len(urls) >= 2
    wait_until(lambda: requests.get(urls[0], headers={"Range": "bytes=0-0"}, timeout=5).status_code == 206)
    other = urls[1].split("/", 3)[2]  # host:port of the second-ranked appliance
    moved = urls[0].replace(urls[0].split("/", 3)[2], other, 1)
    r = requests.get(moved, headers={"Range": "bytes=0-0"}, timeout=5)
    assert r.status_code == 403 and r.headers["X-Oca-Reason"] == "bad-signature"
    assert requests.get(urls[1], headers={"Range": "bytes=0-0"}, timeout=5).status_code == 206  # its own URL works


def test_killed_appliance_leaves_every_answer_then_returns(fleet):
    steering, apps, ports = fleet
    clients = [f"192.0.2.{i}" for i in range(1, 40)]

    def named() -> set[int]:
        return {port_of(u) for c in clients for u in steer(steering.url, COMMON, c)}

    assert ports["ams-1"] in named()
    apps["ams-1"].proc.send_signal(signal.SIGKILL)
    for child in _children(apps["ams-1"].proc.pid):  # the fork server and, below it, the workers
        for worker in _children(child):
            os.kill(worker, signal.SIGKILL)
        os.kill(child, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: ports["ams-1"] not in named(), timeout_s=K * INTERVAL_S + 1.0, every_s=0.05)
    assert time.monotonic() - killed <= K * INTERVAL_S + 1.0
    apps["ams-1"].proc.wait(5)
    apps["ams-1"].start()
    wait_until(lambda: ports["ams-1"] in named(), timeout_s=20, every_s=0.2)


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return found


def test_request_id_ties_the_steering_answer_to_the_appliance_log_line(fleet):
    steering, apps, ports = fleet
    r = requests.post(steering.url + "/v1/steer", json={"client": "127.0.0.1", "files": [RARE]},
                      headers={"X-Request-Id": "play-7f3a", **AUTH}, timeout=5)
    assert r.headers["X-Request-Id"] == "play-7f3a"
    url = r.json()["files"][RARE]["locations"][0]
    assert "&rid=play-7f3a" in url and port_of(url) == ports["lon-2"]
    assert requests.get(url, headers={"Range": "bytes=0-9"}, timeout=5).status_code == 206
    wait_until(lambda: any(e.get("request_id") == "play-7f3a" and e.get("key") == RARE
                           for e in apps["lon-2"].log_events("request")), timeout_s=5)
