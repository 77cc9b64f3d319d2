"""The chaos soak's events and what it watches: daemons killed and restarted through `scripts/lab`, a
worker killed, a disk pulled, the fleet key file rewritten non-atomically mid-rotation, a fill run.

Strategy. `schedule` names each event with the fraction of the run at which it happens; `Chaos` does it
and records it with its time. Each kill is followed by an orphan check (anything still LISTENing on the
killed daemon's ports, anything left in its session), each restart and disk change by `Watch`es (the
time until its /healthz answers, until steering names it up again, ...). `Sampler` reads every daemon's
/metrics for `*_task_restarts_total` and `*_task_failures_total`; `stray_processes` is the final scan.
Process identity (seen, verdict, leftovers) is the lab's own, from scripts/labproc.py.
"""
from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]  # the repo's packages; scripts/ (not a package) for labproc

import labproc  # noqa: E402
from chaos_load import get, get_json  # noqa: E402
from contracts.ids import KeyId  # noqa: E402
from contracts.keys import derive_keyring, keyfile_text, new_secret  # noqa: E402
from contracts.token import Keyring  # noqa: E402
from tests.support import worker_pids_of  # noqa: E402

LAB_PY = REPO / "scripts" / "lab.py"
TASK_METRIC = re.compile(r"^(\w*_task_(restarts|failures)_total)(\{[^}]*\})?\s+(\S+)$")
REJOIN_TIMEOUT_S = 60.0


def lab_cli(state: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(LAB_PY), *args, "--state", str(state)], capture_output=True,
                          text=True, timeout=180)


# ---- what the soak watches: rejoin times, orphans, task restarts ---------------------------------

class Watch(threading.Thread):
    """Time from `since` until `check()` first holds (polled, bounded); None if it never did."""

    def __init__(self, what: str, check: Callable[[], bool], since: float, timeout_s: float = REJOIN_TIMEOUT_S) -> None:
        super().__init__(name=f"watch {what}", daemon=True)
        self.what, self.check, self.since, self.timeout_s = what, check, since, timeout_s
        self.took_s: float | None = None
        self.start()

    def run(self) -> None:
        while time.monotonic() - self.since < self.timeout_s:
            try:
                if self.check():
                    self.took_s = round(time.monotonic() - self.since, 2)
                    return
            except (OSError, ValueError, KeyError, TypeError):
                pass
            time.sleep(0.1)


def listeners(port: int) -> dict[int, list[int]]:
    """Sockets LISTENing on 127.0.0.1/any:port (from /proc/net/tcp{,6}) -> the pids holding them."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            for line in fh.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(cols[9])
    found: dict[int, list[int]] = {}
    if not inodes:
        return found
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            for fd in fds:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    found.setdefault(int(pid), []).append(port)
        except OSError:
            continue
    return found or {-1: [port]}  # a listener whose owner we could not see still counts


def orphans_after_kill(name: str, record: dict, ports: list[int], grace_s: float = 5.0) -> list[dict]:
    """After a SIGKILL: give the daemon's children `grace_s` to notice; then whatever still listens on
    its ports or still runs in its session is an orphan."""
    deadline = time.monotonic() + grace_s
    while True:
        held = {pid: p for port in ports for pid, p in listeners(port).items()}
        left = {r["pid"]: r for r in labproc.leftovers(record)}
        if not held and not left or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    out = []
    for pid in sorted(set(held) | set(left)):
        now = labproc.seen(pid) if pid > 0 else None
        out.append({"after_kill_of": name, "pid": pid, "ports": held.get(pid, []),
                    "cmdline": " ".join(now.cmdline)[:160] if now else "?"})
    return out


def stray_processes(state: Path, live: dict[str, dict], sessions: set[int]) -> list[dict]:
    """Processes of the lab that no live daemon accounts for: their cmdline names the state directory,
    or they run in the session of a daemon incarnation that is gone."""
    live_pids = {r["pid"] for r in live.values() if labproc.is_ours(r)}
    out = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        pid = int(entry)
        now = labproc.seen(pid)
        if now is None or now.state in ("Z", "X") or pid == os.getpid() or pid in live_pids or now.sid in live_pids:
            continue
        if str(state) in " ".join(now.cmdline) or now.sid in sessions:
            out.append({"pid": pid, "sid": now.sid, "cmdline": " ".join(now.cmdline)[:160]})
    return out


class Sampler(threading.Thread):
    """Every few seconds, each live daemon's /metrics: the sum of *_task_restarts_total and
    *_task_failures_total lines, kept per incarnation (name, pid) so a restart does not lose counts."""

    def __init__(self, read_lab: Callable[[], dict], stop: threading.Event, every_s: float = 5.0) -> None:
        super().__init__(name="metrics", daemon=True)
        self.read_lab, self.stop, self.every_s = read_lab, stop, every_s
        self.last: dict[tuple[str, int], dict[str, float]] = {}
        self.start()

    def run(self) -> None:
        while not self.stop.wait(self.every_s):
            self.sample()

    def sample(self) -> None:
        try:
            info = self.read_lab()
        except (OSError, ValueError):
            return
        for name, rec in (info or {}).get("daemons", {}).items():
            status, body = get(str(rec.get("health", "")).replace("/healthz", "/metrics"))
            if status != 200:
                continue
            sums = {"restarts": 0.0, "failures": 0.0}
            for line in body.decode(errors="replace").splitlines():
                m = TASK_METRIC.match(line)
                if m:
                    sums[m.group(2)] += float(m.group(4))
            self.last[(name, rec["pid"])] = sums

    def totals(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for (name, _), sums in self.last.items():
            mine = out.setdefault(name, {"restarts": 0.0, "failures": 0.0})
            for k, v in sums.items():
                mine[k] += v
        return out


# ---- the chaos script ---------------------------------------------------------------------------

class Chaos:
    """The events, each recorded with its time; kills are followed by orphan checks, restarts by watches."""

    def __init__(self, state: Path, t0: float) -> None:
        self.state, self.t0 = state, t0
        self.events: list[dict] = []
        self.watches: list[Watch] = []
        self.orphans: list[dict] = []
        self.sessions: set[int] = set()  # every daemon incarnation's session, for the final orphan scan
        self.fill: subprocess.Popen | None = None
        self.fill_started = 0.0
        self.note_sessions()

    def info(self) -> dict:
        return json.loads((self.state / "lab.json").read_text())

    def note_sessions(self) -> None:
        self.sessions |= {r["pid"] for r in self.info()["daemons"].values()}

    def cli(self, *args: str) -> str:
        out = lab_cli(self.state, *args)
        return (out.stdout + out.stderr).strip().replace("\n", " | ")

    def log(self, event: str, detail: str = "") -> None:
        t = round(time.monotonic() - self.t0, 1)
        self.events.append({"t": t, "event": event, "detail": detail})
        print(f"[{t:6.1f} s] {event}: {detail}", flush=True)

    def ports_of(self, name: str) -> list[int]:
        info = self.info()
        urls = [info["appliances"][name]["url"], info["appliances"][name]["admin"]] if name in info["appliances"] \
            else [info["daemons"][name]["health"]]
        return [urlsplit(u).port for u in urls]

    def kill(self, name: str) -> None:
        record, ports = self.info()["daemons"][name], self.ports_of(name)
        self.log(f"SIGKILL {name}", self.cli("kill", name))
        found = orphans_after_kill(name, record, ports)
        self.orphans += found
        self.log(f"orphan check after {name}", f"{len(found)} orphan(s)" + (f": {found}" if found else ""))

    def restart(self, name: str, *checks: tuple[str, Callable[[], bool]]) -> None:
        since = time.monotonic()
        self.log(f"restart {name}", self.cli("restart", name, "--wait", "0"))
        self.note_sessions()
        health = self.info()["daemons"][name]["health"]
        self.watches.append(Watch(f"{name}: /healthz answers", lambda: get(health)[0] == 200, since))
        for what, check in checks:
            self.watches.append(Watch(f"{name}: {what}", check, since))

    def operator(self) -> dict[str, str]:
        """The lab operator's bearer token: steering's /v1/fleet answers no anonymous caller."""
        token = Path(self.info()["operator_token_file"]).read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    def named_up(self, appliance: str) -> list[tuple[str, Callable[[], bool]]]:
        def up_in(url: str) -> Callable[[], bool]:
            return lambda: any(a["id"] == appliance and a["status"] == "up"
                               for s in get_json(f"{url}/v1/fleet", self.operator())["sites"] for a in s["appliances"])
        return [(f"{rep} names it up", up_in(url)) for rep, url in self.info()["steering_replicas"].items()]

    def kill_worker(self, name: str) -> None:
        supervisor = self.info()["daemons"][name]["pid"]
        workers = worker_pids_of(supervisor)
        if not workers:
            self.log(f"SIGKILL a worker of {name}", "no worker found")
            return
        os.kill(workers[0], signal.SIGKILL)  # just listed as the supervisor's grandchild
        since, url = time.monotonic(), self.info()["appliances"][name]["url"]
        self.log(f"SIGKILL a worker of {name}", f"pid {workers[0]} (workers were {workers})")
        self.watches.append(Watch(f"{name}: worker replaced, data port answers",
                                  lambda: bool(set(worker_pids_of(supervisor)) - set(workers)) and get(url)[0] != 0,
                                  since))

    def pull_disk(self, name: str) -> None:
        disk = self.state / "appliances" / name / "ssd0"
        os.rename(disk, disk.with_name("ssd0.pulled"))
        self.log(f"pull disk {name}/ssd0", "renamed to ssd0.pulled")
        admin = self.info()["appliances"][name]["admin"]
        self.watches.append(Watch(f"{name}: pulled ssd0 reported failed", lambda: not next(
            d for d in get_json(f"{admin}/v1/health")["disks"] if d["tier"] == "ssd")["ok"], time.monotonic()))

    def restore_disk(self, name: str) -> None:
        disk = self.state / "appliances" / name / "ssd0"
        os.rename(disk.with_name("ssd0.pulled"), disk)
        self.log(f"restore disk {name}/ssd0", "renamed back")
        admin = self.info()["appliances"][name]["admin"]
        self.watches.append(Watch(f"{name}: restored ssd0 ok again", lambda: next(
            d for d in get_json(f"{admin}/v1/health")["disks"] if d["tier"] == "ssd")["ok"], time.monotonic()))

    def rewrite_keys(self, step: int, pause_s: float = 1.0) -> None:
        """Rotation as the README tells an operator: step 1 adds k2 to steering's master file and to
        every appliance's derived key file, step 2 makes k2 the master's signing key. Every file is
        written in place, not atomically: truncate, pause, the first half, pause, the rest."""
        path = self.state / "keys.toml"
        current = tomllib.loads(path.read_text())
        keys = dict(current["keys"])
        keys.setdefault("k2", new_secret())
        signing = "k2" if step == 2 else current["signing"]
        text = f'signing = "{signing}"\n\n[keys]\n' + "".join(f'{k} = "{v}"\n' for k, v in keys.items())
        if step == 1:
            master = Keyring({KeyId(k): _b64decode(v) for k, v in keys.items()}, KeyId(signing))
            for own in sorted((self.state / "keys").glob("*.toml")):
                holder = own.stem
                _write_slowly(own, keyfile_text(derive_keyring(master, holder), holder), pause_s / 4)
        _write_slowly(path, text, pause_s)
        self.log(f"key rotation step {step}", f"keys.toml rewritten in place (signing = {signing}, keys {list(keys)})")
        if step == 2:
            for rep, url in self.info()["steering_replicas"].items():
                self.watches.append(Watch(f"{rep}: signs with k2", lambda url=url: get_json(f"{url}/healthz")
                                          ["signing_key"] == "k2", time.monotonic()))

    def run_fill(self, name: str) -> None:
        info = self.info()
        steering = [a for url in info["steering_replicas"].values() for a in ("--steering", url)]
        log = open(self.state / "logs" / f"chaos-fill-{name}.log", "ab")
        self.fill = subprocess.Popen([str(Path(sys.executable).parent / "oca"), "fill", "-c",
                                      info["appliances"][name]["config"], *steering, "--origin", info["origin"],
                                      "--ignore-window", "--no-progress"], stdout=log, stderr=subprocess.STDOUT)
        self.fill_started = time.monotonic()
        self.log(f"oca fill {name}", f"pid {self.fill.pid}")

    def finish_fill(self) -> dict | None:
        if self.fill is None:
            return None
        try:
            code = self.fill.wait(max(1.0, 120 - (time.monotonic() - self.fill_started)))
        except subprocess.TimeoutExpired:
            self.fill.kill()
            code = self.fill.wait(10)
        took = round(time.monotonic() - self.fill_started, 1)
        self.log("oca fill finished", f"exit {code} after {took} s")
        return {"exit": code, "took_s": took}


def schedule(chaos: Chaos) -> list[tuple[float, Callable[[], None]]]:
    return [
        (0.08, lambda: chaos.kill("lab-a1")),
        (0.20, lambda: chaos.restart("lab-a1", *chaos.named_up("lab-a1"))),
        (0.30, lambda: chaos.kill_worker("lab-a2")),
        (0.38, lambda: chaos.kill("steering-1")),
        (0.48, lambda: chaos.restart("steering-1", ("all 4 appliances reported up", lambda: get_json(
            f"{chaos.info()['steering_replicas']['steering-1']}/healthz")["up"] == 4))),
        (0.56, lambda: chaos.pull_disk("lab-a2")),
        (0.66, lambda: chaos.restore_disk("lab-a2")),
        (0.72, lambda: chaos.rewrite_keys(1)),
        (0.78, lambda: chaos.rewrite_keys(2)),
        (0.85, lambda: chaos.run_fill("lab-a2")),
    ]


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _write_slowly(path: Path, text: str, pause_s: float) -> None:
    """Rewrite `path` in place as a careless editor would: readers may see it empty or half written."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.ftruncate(fd, 0)
        time.sleep(pause_s)
        os.write(fd, text[:len(text) // 2].encode())
        time.sleep(pause_s)
        os.write(fd, text[len(text) // 2:].encode())
    finally:
        os.close(fd)
