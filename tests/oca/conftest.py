"""A real appliance for functional tests: `oca serve -c FILE` as a subprocess over temporary SSD and
HDD disk directories, with helpers to sign URLs, talk raw HTTP and read its metrics."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from contracts.keys import load_keyring, new_secret
from contracts.token import client_prefix_for, sign_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Appliance:
    root: Path
    config_path: Path
    port: int = 0
    admin_port: int = 0
    tls_port: int | None = None  # with [tls] in the config
    proc: subprocess.Popen | None = None
    log_path: Path = field(default=None)  # type: ignore[assignment]

    @property
    def ssd(self) -> Path:
        return self.root / "ssd0"

    @property
    def hdd(self) -> Path:
        return self.root / "hdd0"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "oca.cli", *args[:1], "-c", str(self.config_path), *args[1:]],
                              capture_output=True, text=True, check=check, timeout=60)

    def put(self, data: bytes, key: str, tier: str = "ssd") -> dict:
        src = self.root / "incoming.bin"
        src.write_bytes(data)
        out = self.cli("put", str(src), "--key", key, "--tier", tier)
        return json.loads(out.stdout)

    def path_and_query(self, key: str, ttl: int = 600, client: str | None = None, keyfile: Path | None = None) -> str:
        keys = load_keyring(keyfile or self.root / "keys.toml")
        prefix = client_prefix_for(client) if client else None
        return sign_path("/" + key, keys, int(time.time()) + ttl, prefix)

    def url(self, key: str, **kw) -> str:
        return f"http://127.0.0.1:{self.port}{self.path_and_query(key, **kw)}"

    def admin(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=10) as resp:
            return resp.read()

    def health(self) -> dict:
        return json.loads(self.admin("/v1/health"))

    def metric(self, name: str) -> float:
        for line in self.admin("/metrics").decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{") and line.split(" ")[0] == name:
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(name)

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def log_events(self, event: str) -> list[dict]:
        found = []
        for line in self.log_path.read_text().splitlines():
            if f'"{event}"' in line:
                try:
                    found.append(json.loads(line))
                except ValueError:
                    pass
        return found

    def start(self) -> None:
        self.log_path = self.root / f"oca-{time.monotonic_ns()}.log"
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "oca.cli", "serve", "-c", str(self.config_path)],
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for ready in self.log_events("ready"):
                if ready.get("worker") == "supervisor":
                    self.port, self.admin_port = ready["port"], ready["admin_port"]
                    self.tls_port = ready.get("tls_port")
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"appliance did not start:\n{self.log_tail()}")

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise


def write_config(root: Path, sendfile: bool = True, workers: int = 1, extra: str = "") -> Path:
    for d in ("ssd0", "hdd0"):
        (root / d).mkdir(parents=True, exist_ok=True)
    keys = root / "keys.toml"
    if not keys.exists():
        keys.write_text(f'signing = "k1"\n[keys]\nk1 = "{new_secret()}"\n')
    cfg = root / "oca.toml"
    cfg.write_text(f"""
[appliance]
id = "test-oca"
site = "lab"

[http]
listen = "127.0.0.1"
port = 0
workers = {workers}
sendfile = {"true" if sendfile else "false"}
header_timeout_s = 1.0
keepalive_timeout_s = 5.0
send_timeout_s = 5.0
drain_timeout_s = 10.0

[admin]
listen = "127.0.0.1"
port = 0

[tokens]
key_file = "keys.toml"

[store]
index = "state/index.db"
disk_check_interval_s = 0.5

[[tiers.ssd]]
path = "ssd0"

[[tiers.hdd]]
path = "hdd0"

[mover]
enabled = false
{extra}
""")
    return cfg


@pytest.fixture
def make_appliance(tmp_path):
    started: list[Appliance] = []

    def make(sendfile: bool = True, workers: int = 1, extra: str = "", start: bool = True) -> Appliance:
        root = tmp_path / f"oca{len(started)}"
        root.mkdir()
        app = Appliance(root, write_config(root, sendfile, workers, extra))
        started.append(app)
        if start:
            app.start()
        return app

    yield make
    for app in started:
        try:
            app.stop(timeout=15)
        except Exception:
            pass


@pytest.fixture
def tiny_fs(tmp_path):
    """Mount small tmpfs filesystems as disks: the only honest way to make a disk fill up (skips the
    test when a tmpfs cannot be mounted, i.e. not root)."""
    mounted: list[Path] = []

    def mount(name: str, size: int) -> Path:
        path = tmp_path / name
        path.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                capture_output=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs (needs root): {result.stderr.decode().strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def raw_exchange(port: int, payload: bytes, timeout: float = 5.0, read_until_close: bool = True) -> bytes:
    """Send raw bytes and read what comes back until the server closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
                if not read_until_close:
                    break
        except socket.timeout:
            pass
        return b"".join(chunks)


def os_rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


__all__ = ["Appliance", "free_port", "raw_exchange", "os_rss_kb", "os"]
