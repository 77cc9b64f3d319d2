"""Helpers that run real servers for functional tests and load tests: a throw-away nginx
(`nginx.NginxServer`) and the appliance in dev mode (`oca_proc.OcaProcess`), both context managers
bound to 127.0.0.1 on a free port, both stopped (killed if they hang) on exit. Process CPU is read
from /proc/PID/stat, children found by their parent pid, so no psutil is needed."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import Callable


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the usual bind-to-0 race is accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Return once 127.0.0.1:port accepts a connection; raise if `alive()` turns false or on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if not alive():
            raise RuntimeError(f"server exited before accepting connections on 127.0.0.1:{port}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing accepted connections on 127.0.0.1:{port} within {timeout_s} s")
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
    """Send `sig`, wait up to `timeout_s`, then SIGKILL. `proc` must have been started with
    start_new_session=True: whatever is left of its process group (workers of a hung master) is
    killed too, so nothing outlives it. Returns the exit code."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group we created; ESRCH when nobody is left
    except OSError:
        pass
    return proc.wait(5)


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2:].split()  # fields from 3 (state) on; comm may hold spaces


def children_of(pid: int) -> list[int]:
    """Direct children of `pid`, by scanning /proc/*/stat for their parent pid."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields is not None and int(fields[1]) == pid:
                found.append(int(name))
    return sorted(found)


def worker_pids_of(supervisor: int) -> list[int]:
    """The serving workers of an `oca serve` supervisor. Its fork server forks them, so they are
    its grandchildren (the fork server and multiprocessing's resource tracker are its children)."""
    return sorted(p for child in children_of(supervisor) for p in children_of(child))


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes in seconds (stat fields 14 and 15); a gone process counts 0."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")
