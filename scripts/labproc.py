"""The lab's process control: which process a pid is, signalling it only while it is the lab's own,
starting and stopping daemons, and lab.json, the record every `scripts/lab` command reads.

Strategy. A daemon is recorded by its pid together with that process's identity (start time and
/proc cmdline), plus what starts it again (argv, env, cwd, log) and its health URL. `verdict` is pure:
recorded identity vs what /proc shows now. A pid is signalled only through a pidfd opened before the
check, so a pid the kernel handed to another process is never signalled. lab.json is written whole
(temp file + rename) and read-modify-written under an flock on `lab.lock`.
Imported by scripts/lab.py, scripts/labdaemons.py, tests/ops/test_lab_control.py and
loadtests/chaos_events.py; it imports nothing of the project.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Iterator, Mapping

STOP_TIMEOUT_S = 30.0  # SIGTERM drains; SIGKILL after this
Record = dict[str, Any]  # one daemon in lab.json: pid, start_ticks, cmdline, argv, env, cwd, log, health, ...


def say(text: str) -> None:
    print(f"lab: {text}", file=sys.stderr, flush=True)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# ---- is this pid still the process the lab started? ----------------------------------------------

@dataclass(frozen=True)
class Seen:
    """What /proc says about a pid now."""
    start_ticks: int  # /proc/PID/stat field 22: start time, clock ticks after boot (pid + this = one process)
    state: str
    pgid: int
    sid: int
    cmdline: tuple[str, ...]


def seen(pid: int) -> Seen | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()  # from field 3 (state) on; comm may hold spaces
    return Seen(start_ticks=int(fields[19]), state=fields[0].decode(), pgid=int(fields[2]), sid=int(fields[3]),
                cmdline=tuple(a.decode(errors="replace") for a in raw.split(b"\0")[:-1]))


class Verdict(Enum):
    OURS = "alive"
    GONE = "dead"
    OTHER = "dead (pid now another process)"


def verdict(record: Mapping[str, Any], now: Seen | None) -> Verdict:
    """Pure: the recorded process lives only while its pid shows the recorded start time and cmdline.
    A zombie (dead, not yet reaped by its parent) is gone."""
    if now is None or now.state in ("Z", "X"):
        return Verdict.GONE
    if now.start_ticks != record["start_ticks"] or list(now.cmdline) != list(record["cmdline"]):
        return Verdict.OTHER
    return Verdict.OURS


def is_ours(record: Mapping[str, Any]) -> bool:
    return verdict(record, seen(record["pid"])) is Verdict.OURS


def identity(pid: int) -> Record:
    now = seen(pid)
    return {"pid": pid, "start_ticks": now.start_ticks if now else -1, "cmdline": list(now.cmdline) if now else []}


def send(record: Mapping[str, Any], sig: int) -> Verdict:
    """Signal the recorded process if, and only if, it is still ours. The pidfd is opened before the
    check, so the process checked is the one signalled even if the pid is reused in between."""
    try:
        fd = os.pidfd_open(record["pid"])
    except ProcessLookupError:
        return Verdict.GONE
    try:
        found = verdict(record, seen(record["pid"]))
        if found is Verdict.OURS:
            try:
                signal.pidfd_send_signal(fd, sig)
            except ProcessLookupError:
                return Verdict.GONE
        return found
    finally:
        os.close(fd)


def refusal(name: str, record: Mapping[str, Any]) -> str:
    now = seen(record["pid"])
    shown = " ".join(now.cmdline)[:120] if now else "?"
    return f"{name}: pid {record['pid']} is no longer the lab's process (now: {shown!r}); not signalled"


def pid_list(records: list[Record]) -> str:
    return ", ".join(str(r["pid"]) for r in records)


def leftovers(record: Mapping[str, Any]) -> list[Record]:
    """Processes the daemon's own session still holds (workers of a SIGKILLed supervisor): session and
    group id equal to its pid, started no earlier, same interpreter. None if the pid was reused."""
    pid = record["pid"]
    if verdict(record, seen(pid)) is Verdict.OTHER:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != pid:
            now = seen(int(entry))
            if now is not None and _left_by(record, now):
                found.append({"pid": int(entry), "start_ticks": now.start_ticks, "cmdline": list(now.cmdline)})
    return found


def _left_by(record: Mapping[str, Any], now: Seen) -> bool:
    """Pure: a live process in the recorded daemon's own session and group, of its interpreter."""
    pid = record["pid"]
    return (now.state not in ("Z", "X") and now.sid == pid and now.pgid == pid
            and now.start_ticks >= record["start_ticks"] and now.cmdline[:1] == tuple(record["cmdline"][:1]))


# ---- stopping and starting -----------------------------------------------------------------------

def wait_gone(records: list[Record], timeout_s: float) -> list[Record]:
    """Wait until none of `records` is alive; return those still alive at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [r for r in records if is_ours(r)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def stop_all(items: list[tuple[str, Record]], timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
    """SIGTERM every live one (they drain), SIGKILL those left at the deadline, then whatever their
    sessions left behind. Returns the names refused because their pid is now another process."""
    refused, sent = [], []
    for name, record in items:
        found = send(record, signal.SIGTERM)
        if found is Verdict.OTHER:
            say(refusal(name, record))
            refused.append(name)
        elif found is Verdict.OURS:
            sent.append((name, record))
    stuck = wait_gone([r for _, r in sent], timeout_s)
    for name, record in sent:
        if record in stuck:
            say(f"{name} did not stop within {timeout_s:.0f} s: SIGKILL")
            send(record, signal.SIGKILL)
    wait_gone(stuck, 5.0)
    reap_leftovers([(name, record) for name, record in items if name not in refused])
    return refused


def reap_leftovers(items: list[tuple[str, Record]]) -> None:
    for name, record in items:
        left = leftovers(record)
        if left:
            say(f"{name}: {len(left)} process(es) of its session outlived it (pids {pid_list(left)}): SIGKILL")
            for r in left:
                send(r, signal.SIGKILL)


def launch(state: Path, name: str, argv: list[str], env: dict[str, str], health: str | None
           ) -> tuple[subprocess.Popen, Record]:
    """Start one daemon in its own session, appending to its log, and describe it for lab.json."""
    log_path = state / "logs" / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=state,
                                env={**os.environ, **env}, start_new_session=True)  # Ctrl-C reaches only the lab
    # Popen returns once exec has begun, but the kernel sets the new cmdline a moment later.
    deadline = time.monotonic() + 5.0
    while not (record := identity(proc.pid))["cmdline"] and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    record.update(argv=argv, env=env, cwd=str(state), log=str(log_path), health=health,
                  started_at=round(time.time(), 3))
    return proc, record


def relaunch(state: Path, name: str, old: Record) -> tuple[subprocess.Popen, Record]:
    """Stop the recorded process if it still runs (and its session's leftovers), start it again."""
    stop_all([(name, old)])
    proc, record = launch(state, name, list(old["argv"]), dict(old.get("env", {})), old.get("health"))
    record["restarts"] = old.get("restarts", 0) + 1
    return proc, record


# ---- lab.json ------------------------------------------------------------------------------------

def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


class LabFile:
    """lab.json, written whole (temp file + rename); read-modify-write under an flock on lab.lock,
    so the lab and a `restart` from another shell never interleave."""

    def __init__(self, state: Path) -> None:
        self.path = state / "lab.json"
        self.lock_path = state / "lab.lock"

    def read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def write(self, data: dict) -> None:
        write_json(self.path, data)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with open(self.lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def records_of(lab: Mapping[str, Any], state: Path) -> dict[str, Record]:
    """Daemons by name, in start order. A lab.json from before identities were recorded names only
    pids: those count as ours only while their cmdline names this state directory."""
    if "daemons" in lab:
        return dict(lab["daemons"])
    out = {}
    for name, pid in lab.get("pids", {}).items():
        rec = identity(pid)
        out[name] = rec if str(state) in " ".join(rec["cmdline"]) else {**rec, "start_ticks": -1}
    return out


def owner_alive(lab: Mapping[str, Any]) -> bool:
    """A foreground lab (or one still starting) records itself as the owner that `down` and `restart` ask."""
    owner = lab.get("owner")
    return bool(owner) and is_ours(owner)
