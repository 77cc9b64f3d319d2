"""The playback test stack, built once per session: an origin directory with a small sample title
ingested through the origin CLI, steering (`steering serve`) with a fleet of two real appliances
(`oca serve`, one per site) holding the title's files, and `playback serve` in front of both."""
from __future__ import annotations

from contracts.keys import derive_keyring, keyfile_text, load_keyring

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.steering.steer_helpers import AUTH, SITES, SteeringProcess, fleet_toml, free_port, wait_until, write_setup
from playback_testkit import SAMPLE_FPS, SAMPLE_SECONDS, TITLE, PlaybackProcess, playback_toml
from tests.oca.conftest import Appliance, write_config

REPO = Path(__file__).resolve().parents[2]
INTERVAL_S = 0.5
ORIGIN_TOML = """
[origin]
location = "origin"
[encode]
preset = "ultrafast"
segment_s = 2
audio_bitrate_bps = 64000
poster_height = 90
[[encode.ladder]]
name = "144p"
height = 144
bitrate_bps = 160000
[[encode.ladder]]
name = "180p"
height = 180
bitrate_bps = 220000
"""


def run(*args: str, cwd: Path) -> str:
    out = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def make_origin(folder: Path) -> dict:
    """`origin sample` + `origin ingest` into folder/origin; returns the catalog entry (JSON)."""
    (folder / "origin.toml").write_text(ORIGIN_TOML)
    run("origin.cli", "sample", "--seconds", str(SAMPLE_SECONDS), "--size", "320x180", "--fps", str(SAMPLE_FPS),
        str(folder / "src"), cwd=folder)
    run("origin.cli", "ingest", "-c", "origin.toml", "--title-id", TITLE, "--title", "Sample Title",
        "--genres", "test,animation", "--languages", "en", "--release-date", "2024-05-01",
        str(folder / "src" / "sample.mp4"), cwd=folder)
    return json.loads((folder / "origin" / "catalog" / f"{TITLE}.json").read_text())


def start_appliance(root: Path, name: str, site: str, port: int, steering_url: str, keys: Path) -> Appliance:
    root.mkdir()
    # The appliance's own keys, derived for it from steering's master (as provisioning does).
    (root / "keys.toml").write_text(keyfile_text(derive_keyring(load_keyring(keys), name), name))
    config = write_config(root, extra=f'\n[steering]\nurls = ["{steering_url}"]\nreport_interval_s = {INTERVAL_S}\n')
    text = config.read_text().replace('id = "test-oca"', f'id = "{name}"').replace('site = "lab"', f'site = "{site}"')
    config.write_text(text.replace("port = 0", f"port = {port}", 1))
    app = Appliance(root, config)
    app.start()
    return app




@dataclass
class Stack:
    folder: Path
    entry: dict
    steering: SteeringProcess
    apps: dict[str, Appliance]
    ports: dict[str, int]
    playback: PlaybackProcess

    def restart(self, name: str) -> None:
        app = self.apps[name]
        if app.proc is not None and app.proc.poll() is None:
            return
        app.start()
        self.wait_steered(2)

    def locations(self) -> dict[str, list[str]]:
        files = [r["key"] for r in self.entry["renditions"]]
        r = requests.post(self.steering.url + "/v1/steer", json={"client": "127.0.0.1", "files": files}, headers=AUTH, timeout=5)
        return {k: v["locations"] for k, v in r.json()["files"].items()} if r.ok else {}

    def wait_steered(self, n: int, timeout_s: float = 30) -> None:
        wait_until(lambda: (locs := self.locations()) and all(len(v) == n for v in locs.values()),
                   timeout_s=timeout_s, every_s=0.1)


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("playback-stack")
    entry = make_origin(folder)
    sites = {s: SITES[s] for s in ("ams", "fra")}
    ports = {f"{s}-1": free_port() for s in sites}
    config = write_setup(folder / "steering", fleet_toml(sites, per_site=1, base=lambda a: f"http://127.0.0.1:{ports[a]}"),
                         extra="log_decisions = false\n",
                         health={"report_interval_s": INTERVAL_S, "missed_reports": 3, "up_after_reports": 2})
    steering = SteeringProcess(config)
    apps: dict[str, Appliance] = {}
    playback = None
    try:
        for name, port in ports.items():
            apps[name] = start_appliance(folder / name, name, name[:3], port, steering.url,
                                         folder / "steering" / "keys.toml")
            for r in entry["renditions"]:
                apps[name].put((folder / "origin" / r["key"]).read_bytes(), r["key"])
        pb_config = folder / "playback.toml"
        pb_config.write_text(playback_toml(folder / "origin", [steering.url]))
        playback = PlaybackProcess(pb_config)
        stack = Stack(folder, entry, steering, apps, ports, playback)
        stack.wait_steered(2)
        yield stack
    finally:
        if playback is not None:
            playback.stop()
        for app in apps.values():
            try:
                app.stop(timeout=15)
            except Exception:
                if app.proc is not None:
                    app.proc.kill()
        steering.stop()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    out = REPO / "artifacts"
    out.mkdir(exist_ok=True)
    return out
