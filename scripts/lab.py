"""The lab: the whole system on one machine, on loopback.

    origin (local directory, and `origin serve` for fill) ─ steering ─ 2 sites x 2 appliances ─ playback

It makes a sample title with ffmpeg and ingests it (a 4-rung H.264 ladder, so it takes seconds),
starts every daemon with its own config under the state directory, runs one fill on every appliance
(manifests planned by steering from their heartbeats), and prints the player's URL and an ffmpeg
command that plays the title through playback -> steering -> appliance. `lab.json` in the state
directory lists every endpoint and pid for scripts. Ctrl-C (or `scripts/lab down`) stops it all.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent
TITLE = "lab-sample"
SITES = {"lab-a": ("127.0.0.0/8", 52.37, 4.90), "lab-b": ("198.18.0.0/15", 50.11, 8.68)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def say(text: str) -> None:
    print(f"lab: {text}", file=sys.stderr, flush=True)


def run(*cmd: str) -> str:
    out = subprocess.run([str(BIN / cmd[0]), *cmd[1:]], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"lab: `{' '.join(cmd)}` failed:\n{out.stderr[-2000:]}")
    return out.stdout


def get_json(url: str, timeout: float = 3.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait(what: str, check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"lab: timed out waiting for {what}")


class Lab:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.procs: dict[str, subprocess.Popen] = {}
        self.endpoints: dict[str, object] = {}

    def spawn(self, name: str, *cmd: str) -> subprocess.Popen:
        log = open(self.state / "logs" / f"{name}.log", "ab")
        proc = subprocess.Popen([str(BIN / cmd[0]), *cmd[1:]], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # Ctrl-C reaches the lab, which stops them in order
        self.procs[name] = proc
        return proc

    # ---- pieces ----------------------------------------------------------------------------
    def keys(self) -> Path:
        path = self.state / "keys.toml"
        if not path.exists():
            from contracts.keys import write_new_keyfile

            write_new_keyfile(path)
        return path

    def origin(self, keys: Path, seconds: int) -> None:
        origin_dir, sample_dir = self.state / "origin", self.state / "sample"
        port = free_port()
        (self.state / "origin.toml").write_text(f"""[origin]
location = "{origin_dir}"
[serve]
listen = "127.0.0.1"
port = {port}
key_file = "{keys}"
catalog_public = true
[encode]
preset = "veryfast"
segment_s = 2.0
[[encode.ladder]]
name = "240p"
height = 240
bitrate_bps = 400000
[[encode.ladder]]
name = "360p"
height = 360
bitrate_bps = 800000
[[encode.ladder]]
name = "480p"
height = 480
bitrate_bps = 1200000
[[encode.ladder]]
name = "720p"
height = 720
bitrate_bps = 2500000
""")
        if not (sample_dir / "sample.mp4").exists():
            say(f"making a {seconds} s sample title (ffmpeg test pattern and tone)…")
            run("origin", "sample", str(sample_dir), "--seconds", str(seconds), "--size", "1280x720", "--fps", "25")
        say("ingesting it into the origin (ABR ladder, byte-range playlists, catalog entry)…")
        run("origin", "ingest", str(sample_dir / "sample.mp4"), "-c", str(self.state / "origin.toml"),
            "--title-id", TITLE, "--title", "Lab Sample", "--genres", "test", "--languages", "en")
        self.spawn("origin", "origin", "serve", "-c", str(self.state / "origin.toml"))
        self.endpoints["origin"] = f"http://127.0.0.1:{port}"
        wait("origin", lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2))

    def steering(self, keys: Path, appliances: dict[str, int]) -> None:
        port = free_port()
        fleet = []
        for site, (prefix, lat, lon) in SITES.items():
            fleet.append(f'[[sites]]\nid = "{site}"\nlatitude = {lat}\nlongitude = {lon}\nprefixes = ["{prefix}"]\n')
            for name, app_port in appliances.items():
                if name.startswith(site):
                    fleet.append(f'[[sites.appliances]]\nid = "{name}"\nbase_url = "http://127.0.0.1:{app_port}"\n'
                                 f"capacity_gbps = 10\n")
        (self.state / "fleet.toml").write_text("\n".join(fleet))
        (self.state / "steering.toml").write_text(f"""[steering]
listen = "127.0.0.1"
port = {port}
fleet_file = "fleet.toml"
key_file = "{keys}"
default_site = "lab-a"
[health]
report_interval_s = 1.0
missed_reports = 3
up_after_reports = 2
[fill]
origin = "{self.state / 'origin'}"
origin_url = "{self.endpoints['origin']}"
replan_interval_s = 2.0
""")
        self.spawn("steering", "steering", "serve", "-c", str(self.state / "steering.toml"))
        self.endpoints["steering"] = f"http://127.0.0.1:{port}"
        wait("steering", lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2))

    def appliances(self, keys: Path, ports: dict[str, int]) -> None:
        for name, port in ports.items():
            root = self.state / "appliances" / name
            for disk in ("ssd0", "hdd0"):
                (root / disk).mkdir(parents=True, exist_ok=True)
            admin = free_port()
            (root / "oca.toml").write_text(f"""[appliance]
id = "{name}"
site = "{name[:5]}"
[http]
listen = "127.0.0.1"
port = {port}
workers = 1
access_log = false
[admin]
listen = "127.0.0.1"
port = {admin}
[tokens]
key_file = "{keys}"
[store]
index = "state/index.db"
[[tiers.ssd]]
path = "ssd0"
[[tiers.hdd]]
path = "hdd0"
[steering]
urls = ["{self.endpoints['steering']}"]
report_interval_s = 1.0
""")
            self.spawn(name, "oca", "serve", "-c", str(root / "oca.toml"))
            self.endpoints.setdefault("appliances", {})[name] = {  # type: ignore[union-attr]
                "url": f"http://127.0.0.1:{port}", "admin": f"http://127.0.0.1:{admin}",
                "config": str(root / "oca.toml")}
        wait("4 appliances up in steering",
             lambda: get_json(f"{self.endpoints['steering']}/healthz").get("up") == len(ports), timeout=90)

    def fill(self) -> None:
        say("nightly fill, now: each appliance fetches its manifest (peer first, then the origin)…")
        time.sleep(3)  # a replan after the first heartbeats
        runs = {name: subprocess.Popen(
            [str(BIN / "oca"), "fill", "-c", info["config"], "--steering", str(self.endpoints["steering"]),
             "--origin", str(self.endpoints["origin"]), "--ignore-window", "--no-progress"],
            stdout=open(self.state / "logs" / f"fill-{name}.log", "ab"), stderr=subprocess.STDOUT)
            for name, info in self.endpoints["appliances"].items()}  # type: ignore[union-attr]
        for name, proc in runs.items():
            code = proc.wait(600)
            say(f"fill {name}: exit {code} (log: {self.state / 'logs' / f'fill-{name}.log'})")

    def playback(self) -> None:
        port = free_port()
        (self.state / "playback.toml").write_text(f"""[playback]
listen = "127.0.0.1"
port = {port}
steering_urls = ["{self.endpoints['steering']}"]
[origin]
location = "{self.state / 'origin'}"
""")
        self.spawn("playback", "playback", "serve", "-c", str(self.state / "playback.toml"))
        self.endpoints["playback"] = f"http://127.0.0.1:{port}"
        wait("playback", lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2))

    # ---- the whole ---------------------------------------------------------------------------
    def up(self, seconds: int) -> None:
        (self.state / "logs").mkdir(parents=True, exist_ok=True)
        keys = self.keys()
        ports = {f"{site}{i}": free_port() for site in SITES for i in (1, 2)}
        self.origin(keys, seconds)
        self.steering(keys, ports)
        self.appliances(keys, ports)
        self.fill()
        self.playback()
        self.endpoints["title"] = TITLE
        self.endpoints["pids"] = {name: p.pid for name, p in self.procs.items()}
        (self.state / "lab.json").write_text(json.dumps(self.endpoints, indent=2))
        pb = self.endpoints["playback"]
        print(f"""
The lab is up ({self.state / 'lab.json'} lists every endpoint):
  web player:   {pb}/play/{TITLE}      catalog: {pb}/      fleet: {pb}/fleet
  play it:      ffmpeg -hide_banner -i {pb}/v1/playback/{TITLE}/master.m3u8 -f null -
  steering:     {self.endpoints['steering']}/v1/fleet
Ctrl-C (or scripts/lab down) stops everything.""", flush=True)

    def down(self) -> None:
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        (self.state / "lab.json").unlink(missing_ok=True)


def down_from_file(state: Path) -> int:
    try:
        pids = json.loads((state / "lab.json").read_text())["pids"]
    except (OSError, ValueError, KeyError):
        print("lab: no running lab found", file=sys.stderr)
        return 1
    for name, pid in pids.items():
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    (state / "lab.json").unlink(missing_ok=True)
    print(f"lab: stopped {', '.join(pids)}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(prog="scripts/lab")
    ap.add_argument("action", nargs="?", default="up", choices=["up", "down"])
    ap.add_argument("--state", type=Path, default=Path(__file__).resolve().parents[1] / "lab-state")
    ap.add_argument("--seconds", type=int, default=20, help="length of the sample title")
    ap.add_argument("--detach", action="store_true", help="start, print, and leave it running")
    args = ap.parse_args()
    state = args.state.resolve()
    if args.action == "down":
        return down_from_file(state)
    state.mkdir(parents=True, exist_ok=True)
    lab = Lab(state)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    try:
        lab.up(args.seconds)
        if args.detach:
            return 0
        while not stop["now"] and all(p.poll() is None for p in lab.procs.values()):
            time.sleep(0.5)
        dead = [n for n, p in lab.procs.items() if p.poll() is not None]
        if dead:
            say(f"{', '.join(dead)} stopped (see {state / 'logs'}); stopping the rest")
    except KeyboardInterrupt:
        pass
    finally:
        if not args.detach:
            say("stopping…")
            lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
