"""The lab's process control (scripts/lab.py, scripts/labproc.py): a daemon that dies leaves the rest
running, `status` shows it, `kill`/`restart` act on it by name, and no command signals a pid that is no
longer the process the lab recorded. Real processes throughout: the identity checks against `sleep`s
and forks, then a real lab (2 s sample title, no fill: ~10 s to start) detached and in the foreground."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.labtest import LAB_PY, eventually, lab_cli  # also puts scripts/ on sys.path

import labproc as lab  # noqa: E402  (process identity, signals, stop/start, lab.json)
from labdaemons import get_json  # noqa: E402




def status(state: Path) -> dict[str, dict]:
    out = lab_cli(state, "status", "--json")
    return {row["name"]: row for row in json.loads(out.stdout)["daemons"]}


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def alive(pid: int) -> bool:
    now = lab.seen(pid)
    return now is not None and now.state not in ("Z", "X")


@pytest.fixture
def sleeper():
    procs: list[subprocess.Popen] = []

    def start(*argv: str) -> subprocess.Popen:
        proc = subprocess.Popen(list(argv) or ["sleep", "120"], start_new_session=True)
        eventually(lambda: lab.identity(proc.pid)["cmdline"], "cmdline set")
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


# ---- identity: the pure verdict, and signals only to our own process ------------------------------

RECORD = {"pid": 10, "start_ticks": 500, "cmdline": ["/venv/bin/python", "/venv/bin/oca", "serve"]}


@pytest.mark.parametrize("now, expected", [
    (None, lab.Verdict.GONE),
    (lab.Seen(500, "S", 10, 10, ("/venv/bin/python", "/venv/bin/oca", "serve")), lab.Verdict.OURS),
    (lab.Seen(500, "Z", 10, 10, ()), lab.Verdict.GONE),
    (lab.Seen(501, "S", 10, 10, ("/venv/bin/python", "/venv/bin/oca", "serve")), lab.Verdict.OTHER),
    (lab.Seen(500, "S", 10, 10, ("sleep", "120")), lab.Verdict.OTHER),
], ids=["no-such-pid", "same-process", "zombie", "pid-reused-same-cmdline", "other-cmdline"])
def test_verdict(now, expected):
    assert lab.verdict(RECORD, now) is expected


def test_send_signals_only_the_recorded_process(sleeper):
    proc = sleeper()
    real = lab.identity(proc.pid)
    assert lab.send({**real, "start_ticks": real["start_ticks"] - 1}, signal.SIGTERM) is lab.Verdict.OTHER
    assert lab.send({**real, "cmdline": ["/x/bin/python", "/x/bin/oca", "serve"]}, signal.SIGTERM) is lab.Verdict.OTHER
    assert alive(proc.pid)
    assert lab.send(real, signal.SIGTERM) is lab.Verdict.OURS
    assert proc.wait(10) == -signal.SIGTERM
    assert lab.send(real, signal.SIGTERM) is lab.Verdict.GONE


def test_stop_all_reaps_what_a_killed_leader_left_in_its_session(sleeper):
    # A leader that forks a child (same interpreter and cmdline), as `oca serve` forks its workers.
    leader = sleeper(sys.executable, "-c", "import os, time; os.fork(); time.sleep(120)")
    record = lab.identity(leader.pid)
    eventually(lambda: lab.leftovers(record), "the forked child")
    os.kill(leader.pid, signal.SIGKILL)
    leader.wait(10)
    left = lab.leftovers(record)
    assert len(left) == 1 and alive(left[0]["pid"])
    assert lab.stop_all([("leader", record)], timeout_s=5) == []
    eventually(lambda: not alive(left[0]["pid"]), "the child killed")


# ---- a real lab -----------------------------------------------------------------------------------

def start_detached(state: Path) -> dict:
    out = lab_cli(state, "up", "--detach", "--no-fill", "--seconds", "2", timeout_s=240)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads((state / "lab.json").read_text())


def test_detached_lab_kill_status_restart_and_down_refuses_foreign_pids(tmp_path, sleeper):
    state = tmp_path / "lab"
    info = start_detached(state)
    try:
        names = list(info["daemons"])
        assert {"origin", "steering-1", "steering-2", "lab-a1", "lab-a2", "lab-b1", "lab-b2", "playback"} <= set(names)
        assert all(row["state"] == "alive" for row in status(state).values())
        assert lab_cli(state, "up", "--detach").returncode != 0  # one lab per state directory

        victim = info["daemons"]["lab-a2"]
        assert lab_cli(state, "kill", "lab-a2").returncode == 0
        eventually(lambda: status(state)["lab-a2"]["state"] == "dead", "status shows lab-a2 dead")
        rows = status(state)
        assert all(rows[n]["state"] == "alive" for n in names if n != "lab-a2")
        assert lab_cli(state, "status").returncode == 3  # not everything alive
        assert lab_cli(state, "kill", "lab-a2").returncode == 1  # nothing to signal

        out = lab_cli(state, "restart", "lab-a2")
        assert out.returncode == 0, out.stderr
        after = json.loads((state / "lab.json").read_text())
        fresh = after["daemons"]["lab-a2"]
        assert fresh["pid"] != victim["pid"] and after["pids"]["lab-a2"] == fresh["pid"] and fresh["restarts"] == 1
        assert healthy(fresh["health"]) and status(state)["lab-a2"]["state"] == "alive"
        eventually(lambda: all(get_json(f"{url}/healthz")["up"] == 4
                               for url in after["steering_replicas"].values()), "steering has lab-a2 up again")

        assert lab_cli(state, "restart", "steering-2").returncode == 0  # restart of a live daemon: stop, start
        assert healthy(json.loads((state / "lab.json").read_text())["daemons"]["steering-2"]["health"])

        # Entries whose pid is now an unrelated process: another cmdline, or the same one started later.
        foreign, twin = sleeper(), sleeper()
        with lab.LabFile(state).locked():
            data = json.loads((state / "lab.json").read_text())
            data["daemons"]["ghost"] = {**lab.identity(foreign.pid), "cmdline": victim["cmdline"]}
            data["daemons"]["twin"] = {**lab.identity(twin.pid), "start_ticks": lab.identity(twin.pid)["start_ticks"] - 7}
            lab.LabFile(state).write(data)
        assert lab_cli(state, "kill", "ghost").returncode == 2 and alive(foreign.pid)
        down = lab_cli(state, "down")
    finally:
        lab_cli(state, "down")
    assert down.returncode == 0 and "refused" in down.stdout and "ghost" in down.stderr
    assert alive(foreign.pid) and alive(twin.pid)
    assert not (state / "lab.json").exists()
    for name, rec in data["daemons"].items():
        if name not in ("ghost", "twin"):
            assert not alive(rec["pid"]) and not lab.leftovers(rec), name


def test_foreground_lab_survives_a_death_and_restarts_through_its_owner(tmp_path):
    state = tmp_path / "lab"
    state.mkdir()
    stderr = state / "foreground.err"
    with open(stderr, "wb") as err:
        owner = subprocess.Popen([sys.executable, str(LAB_PY), "up", "--no-fill", "--seconds", "2",
                                  "--state", str(state)], stdout=subprocess.DEVNULL, stderr=err)
    try:
        info = eventually(lambda: (lambda d: d if d and d.get("ready") else None)(lab.LabFile(state).read()),
                          "the lab up", timeout_s=240)
        assert info["owner"]["pid"] == owner.pid
        victim = info["daemons"]["lab-b1"]
        assert lab_cli(state, "kill", "lab-b1").returncode == 0
        line = eventually(lambda: next((l for l in stderr.read_text().splitlines() if "lab-b1 (pid" in l), None),
                          "the lab names the dead daemon")
        assert "SIGKILL" in line and victim["log"] in line
        time.sleep(1.0)  # the lab keeps running and so does the rest
        assert owner.poll() is None
        rows = status(state)
        assert rows["lab-b1"]["state"] == "dead"
        assert all(r["state"] == "alive" for n, r in rows.items() if n != "lab-b1")

        out = lab_cli(state, "restart", "lab-b1")
        assert out.returncode == 0, out.stderr
        fresh = json.loads((state / "lab.json").read_text())["daemons"]["lab-b1"]
        assert lab.seen(fresh["pid"]) is not None
        assert int(Path(f"/proc/{fresh['pid']}/stat").read_text().rsplit(")", 1)[1].split()[1]) == owner.pid
        assert healthy(fresh["health"])

        owner.send_signal(signal.SIGINT)  # Ctrl-C stops everything
        assert owner.wait(120) == 0
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(10)
        lab_cli(state, "down")
    assert not (state / "lab.json").exists()
    for name, rec in info["daemons"].items():
        assert not alive(rec["pid"]), name
    assert not alive(fresh["pid"])
