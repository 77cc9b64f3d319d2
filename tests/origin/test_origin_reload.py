"""`origin serve` (a real process) reloads on SIGHUP (`systemctl reload`) instead of dying: under a
client loop no request is lost, a response in flight finishes with the bytes it started with, and a
config it cannot read keeps it serving the running one (logged with the traceback, counted in
`origin_task_failures_total{task="reload"}`) until a good one is loaded by the next SIGHUP."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests
from origin_testkit import OriginProcess

from contracts.keys import load_keyring
from contracts.token import fill_keys, fill_token
from tests.support.reload_load import ClientLoop

KEY = "files/t1/v1/video.mp4"


@pytest.fixture()
def origin_dir(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(16 << 20)  # large enough that a slow reader keeps a response in flight
    (tmp_path / "origin" / "files/t1/v1").mkdir(parents=True)
    (tmp_path / "origin" / KEY).write_bytes(data)
    return tmp_path / "origin", data


def config_text(location: Path, keyfile: Path, cache_control: str) -> str:
    return (f'[origin]\nlocation = "{location}"\n[serve]\nport = 0\nkey_file = "{keyfile}"\n'
            f'chunk_bytes = 65536\ncache_control = "{cache_control}"\n')


def wait_for(predicate, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return value


@pytest.fixture()
def auth(keyfile: Path) -> dict[str, str]:
    token = fill_token(fill_keys(load_keyring(keyfile), "ams-1"), int(time.time()) + 3600, "ams-1")
    return {"Authorization": f"CDN-Token {token}"}


def test_sighup_under_load_loses_no_request(origin_dir, keyfile, auth, tmp_path: Path) -> None:
    location, data = origin_dir
    conf = tmp_path / "origin.toml"
    conf.write_text(config_text(location, keyfile, "max-age=0"))
    origin = OriginProcess(conf)

    def ranged_get(s: requests.Session, i: int) -> object:
        """None when the range came back whole and right; else the status."""
        start = (i * 7919) % (len(data) - 4096)
        r = s.get(f"{origin.url}/{KEY}", headers={**auth, "Range": f"bytes={start}-{start + 4095}"}, timeout=10)
        return None if r.status_code == 206 and r.content == data[start:start + 4096] else r.status_code

    try:
        with requests.get(f"{origin.url}/{KEY}", headers=auth, stream=True, timeout=10) as slow:
            first = slow.raw.read(1 << 20)  # a response in flight across every reload below
            # bounded: stops when told, or after 5 000 requests
            with ClientLoop(ranged_get, most=5_000, join_s=60) as clients:
                for n in range(1, 6):
                    conf.write_text(config_text(location, keyfile, f"max-age={n}"))
                    origin.proc.send_signal(signal.SIGHUP)
                    wait_for(lambda: len(origin.events("reloaded")) >= n)
            assert first + slow.raw.read() == data  # finished, whole, with its own snapshot
        done, failures = len(clients.outcomes), [o for o in clients.outcomes if o is not None]
        assert done > 10 and failures == []
        r = requests.head(f"{origin.url}/{KEY}", headers=auth, timeout=10)
        assert r.headers["Cache-Control"] == "max-age=5"  # the last reload is what serves now
    finally:
        assert origin.stop() == 0


def test_a_broken_config_on_sighup_keeps_serving(origin_dir, keyfile, auth, tmp_path: Path) -> None:
    location, data = origin_dir
    conf = tmp_path / "origin.toml"
    conf.write_text(config_text(location, keyfile, "max-age=1"))
    origin = OriginProcess(conf)
    try:
        conf.write_text(config_text(location, tmp_path / "no-such-keys.toml", "max-age=2"))
        origin.proc.send_signal(signal.SIGHUP)
        (failed,) = wait_for(lambda: origin.events("task-failed"))
        assert failed["task"] == "reload" and "ReloadFailed" in failed["traceback"]
        assert "no-such-keys.toml" in failed["error"]
        metrics = requests.get(f"{origin.url}/metrics", timeout=10).text
        assert 'origin_task_failures_total{task="reload"} 1.0' in metrics
        r = requests.get(f"{origin.url}/{KEY}", headers={**auth, "Range": "bytes=0-99"}, timeout=10)
        assert r.status_code == 206 and r.content == data[:100] and r.headers["Cache-Control"] == "max-age=1"
        assert requests.get(f"{origin.url}/healthz", timeout=10).text == "ok\n"  # one failure: not degraded

        conf.write_text("[serve\nport = ")  # not even TOML: the same, logged again
        origin.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(origin.events("task-failed")) == 2, timeout_s=15)  # after the restart backoff
        assert requests.head(f"{origin.url}/{KEY}", headers=auth, timeout=10).status_code == 200

        conf.write_text(config_text(location, keyfile, "max-age=3"))
        origin.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: origin.events("reloaded"), timeout_s=15)
        assert requests.head(f"{origin.url}/{KEY}", headers=auth, timeout=10).headers["Cache-Control"] == "max-age=3"
    finally:
        assert origin.stop() == 0
