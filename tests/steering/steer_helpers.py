"""Shared helpers for steering tests: fleet and config files, heartbeats, a real server in a thread."""
from __future__ import annotations

import hashlib
import itertools
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import requests

from tests.support.appthread import AppThread
from contracts.heartbeat import (CONTENT_TYPE, SIGNATURE_HEADER, DiskReport, DiskState, HealthSnapshot, Heartbeat,
                                 InventoryUpdate, Load, encode_heartbeat, sign_body)
from contracts.ids import ApplianceId, FileKey, SiteId
from contracts.keys import derive_keyring, load_keyring, write_new_keyfile
from contracts.token import Keyring
from steering import config as steering_config
from steering.core.fleet import ApplianceSpec, SiteSpec, build_fleet
from steering.server import make_app
from steering.service import Replica, load_all

# Three sites, three appliances each: Amsterdam, Frankfurt, London.
SITES = {
    "ams": (52.37, 4.90, ["192.0.2.0/24", "2001:db8:a::/48"]),
    "fra": (50.11, 8.68, ["198.51.100.0/24", "2001:db8:f::/48"]),
    "lon": (51.51, -0.13, ["203.0.113.0/24"]),
}


def fleet_toml(sites: dict[str, tuple[float, float, list[str]]] = SITES, per_site: int = 3,
               base: Callable[[str], str] = lambda a: f"http://{a}.oca.test:8080", capacity_gbps: float = 10) -> str:
    out = []
    for site, (lat, lon, prefixes) in sites.items():
        out.append(f'[[sites]]\nid = "{site}"\nlatitude = {lat}\nlongitude = {lon}\nprefixes = {prefixes!r}\n'
                   .replace("'", '"'))
        for i in range(1, per_site + 1):
            a = f"{site}-{i}"
            out.append(f'[[sites.appliances]]\nid = "{a}"\nbase_url = "{base(a)}"\ncapacity_gbps = {capacity_gbps}\n')
    return "\n".join(out)


def core_fleet(spec: dict[str, tuple[float, float, list[str], list[tuple[str, int]]]]):
    """A core Fleet from {site: (lat, lon, prefixes, [(appliance, capacity_bps)])}."""
    return build_fleet(
        SiteSpec(SiteId(site), lat, lon,
                 tuple(ApplianceSpec(ApplianceId(a), SiteId(site), f"http://{a}", cap) for a, cap in apps),
                 tuple(prefixes))
        for site, (lat, lon, prefixes, apps) in spec.items())


OPERATOR_TOKEN = "test-operator-token-0123456789abcdef0123456789"  # every role; tests only
AUTH = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


def callers_toml(roles: str = '["steer", "fleet", "manifests", "demand", "withdraw"]') -> str:
    digest = hashlib.sha256(OPERATOR_TOKEN.encode()).hexdigest()
    return f'[callers.operator]\ntoken_sha256 = "{digest}"\nroles = {roles}\n'


def write_setup(folder: Path, fleet_text: str | None = None, port: int = 0, extra: str = "",
                health: dict[str, float] | None = None, default_site: str = "ams",
                steering: dict[str, float] | None = None) -> Path:
    """Write keys, fleet and steering config into `folder`; returns the config path. `health` and
    `steering` override settings of those sections; `extra` is appended to [steering] verbatim."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "keys.toml").exists():
        write_new_keyfile(folder / "keys.toml")
    (folder / "fleet.toml").write_text(fleet_text if fleet_text is not None else fleet_toml())
    (folder / "callers.toml").write_text(callers_toml())
    config = folder / "steering.toml"
    main = {"reload_check_interval_s": 0.1, "drain_grace_s": 0.1, "drain_timeout_s": 2.0, **(steering or {})}
    health_all = {"report_interval_s": 0.3, "missed_reports": 3, **(health or {})}
    config.write_text(f"""
[steering]
listen = "127.0.0.1"
port = {port}
fleet_file = "fleet.toml"
key_file = "keys.toml"
callers_file = "callers.toml"
default_site = "{default_site}"
{_lines(main)}
{extra}
[health]
{_lines(health_all)}
""")
    return config


def _lines(settings: dict[str, float]) -> str:
    return "\n".join(f"{k} = {v}" for k, v in settings.items())


_SEQ = itertools.count(1)
BOOT = "00c0ffee00c0ffee"  # one reporter "run" for the whole test session: seq keeps growing


def heartbeat(appliance: str, site: str, *, seq: int | None = None, egress: int = 1_000, capacity: int = 10 * 10**9,
              accepting: bool = True, draining: bool = False, failed_disks: int = 0, disks: int = 2,
              generation: int = 1, full: bool = True, added: Iterable[str] = (), removed: Iterable[str] = (),
              base: int | None = None, pull_through: bool = False) -> Heartbeat:
    health = HealthSnapshot(
        accepting=accepting, draining=draining, load=Load(0.5, 10), egress_bps=egress, capacity_bps=capacity,
        disks=tuple(DiskReport(f"/d{i}", "hdd", DiskState.FAILED if i < failed_disks else DiskState.OK,
                               10**12, 10**11, 3) for i in range(disks)),
        popularity={FileKey("t/a.mp4"): (3.0, 3000.0)}, pull_through=pull_through)
    inv = InventoryUpdate(generation=generation, full=full, added=tuple(FileKey(k) for k in added),
                          removed=tuple(FileKey(k) for k in removed), base=None if full else base)
    return Heartbeat(ApplianceId(appliance), SiteId(site), next(_SEQ) if seq is None else seq, time.time(), health,
                     inv, boot=BOOT)


def post_heartbeat(url: str, hb: Heartbeat, keys: Keyring | None, accept: str = CONTENT_TYPE) -> requests.Response:
    """POST one report as an appliance does: msgpack, signed with the keys derived for it from the
    master ring `keys` (None: unsigned)."""
    body = encode_heartbeat(hb)
    headers = {"Content-Type": CONTENT_TYPE, "Accept": accept}
    if keys is not None:
        headers[SIGNATURE_HEADER] = sign_body(body, derive_keyring(keys, hb.appliance_id), hb.appliance_id)
    return requests.post(url + "/v1/heartbeat", data=body, headers=headers, timeout=5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout_s: float = 5.0, every_s: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(every_s)


class ServerThread(AppThread):
    """A real steering server on 127.0.0.1 (an ephemeral port) on its own loop in a thread; `call`
    runs a function on that loop (the replica is not thread-safe)."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        config = steering_config.load(config_path)
        self.replica = Replica(config, load_all(config))
        super().__init__(lambda: make_app(self.replica, self.config_path), port=config.server.port)

    @property
    def keys(self) -> Keyring:
        return load_keyring(self.config_path.parent / "keys.toml")

    def post_heartbeat(self, hb: Heartbeat, accept: str = CONTENT_TYPE) -> requests.Response:
        return post_heartbeat(self.url, hb, self.keys, accept)


def log_events(path: Path, event: str | None = None) -> list[dict[str, Any]]:
    """The JSON log lines of a daemon's stdout file (every line must be one), optionally one event's."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in lines if event is None or e.get("event") == event]


def wait_for_port(proc: "subprocess.Popen[bytes]", log: Path, timeout_s: float = 30.0) -> int:
    """The port in the daemon's `listening` log event (stdout goes to a file: a pipe nobody drains
    would block the daemon once full of decision lines)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log.read_text()
        for line in text.splitlines():
            if '"event":"listening"' in line:
                return int(json.loads(line)["port"])
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before listening:\n{text[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"not listening after {timeout_s} s, see {log}")


class SteeringProcess:
    """`steering serve -c CONFIG` as a real OS process; its log (stdout) in steering.log beside the
    config, the port read from the `listening` event."""

    def __init__(self, config_path: Path) -> None:
        self.log = config_path.parent / "steering.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "steering.cli", "serve", "-c", str(config_path)],
                                         stdout=out, stderr=subprocess.STDOUT)
        self.port = wait_for_port(self.proc, self.log)
        self.url = f"http://127.0.0.1:{self.port}"
        self.keys = load_keyring(config_path.parent / "keys.toml")

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        return log_events(self.log, event)

    def post_heartbeat(self, hb: Heartbeat) -> requests.Response:
        return post_heartbeat(self.url, hb, self.keys)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(10)
        except Exception:
            self.proc.kill()
            return self.proc.wait(5)
