"""`playback serve` (a real process) reloads on SIGHUP without losing a request, and a config it
cannot read keeps it serving with the running one: the failure is logged with its traceback and
counted (`playback_task_failures_total{task="reload"}`), the next SIGHUP retries. Only the catalog
API is used, so no steering or appliance is needed (the steering URL points nowhere)."""
from __future__ import annotations

import signal
from pathlib import Path

import requests

from playback_testkit import PlaybackProcess, origin_with_title, playback_toml
from tests.steering.steer_helpers import wait_until
from tests.support.reload_load import ClientLoop

NOWHERE = "http://127.0.0.1:9"


def metric(url: str, line_start: str) -> float:
    lines = [line for line in requests.get(url + "/metrics", timeout=5).text.splitlines()
             if line.startswith(line_start + " ")]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


def test_sighup_under_load_loses_no_request(tmp_path: Path) -> None:
    origins = [origin_with_title(tmp_path / f"origin{i}", "t1") for i in (0, 1)]
    config = tmp_path / "playback.toml"
    uncached = "catalog_cache_s = 0\n"  # every request reads the catalog of the origin it finds
    config.write_text(playback_toml(origins[0], [NOWHERE], uncached))
    playback = PlaybackProcess(config)

    def title(s: requests.Session, _: int) -> object:
        return s.get(playback.url + "/v1/titles/t1", timeout=5).status_code

    try:
        with ClientLoop(title, most=20_000) as clients:  # bounded: stops when told, or after 20 000 requests
            for n in range(1, 6):  # each reload switches origins: a new catalog is opened and swapped in
                config.write_text(playback_toml(origins[n % 2], [NOWHERE], uncached))
                playback.proc.send_signal(signal.SIGHUP)
                wait_until(lambda: len(playback.events("reloaded")) >= n)
        statuses = clients.outcomes
        assert len(statuses) > 10 and set(statuses) == {200}
        assert [e["origin"] for e in playback.events("reloaded")] == [str(origins[n % 2]) for n in range(1, 6)]
    finally:
        assert playback.stop() == 0


def test_an_unreadable_config_on_sighup_keeps_serving(tmp_path: Path) -> None:
    origin = origin_with_title(tmp_path / "origin", "t1")
    config = tmp_path / "playback.toml"
    config.write_text(playback_toml(origin, [NOWHERE]))
    playback = PlaybackProcess(config)
    try:
        config.write_text("[playback\nport = ")
        playback.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: playback.events("task-failed"))
        (failed,) = playback.events("task-failed")
        assert failed["task"] == "reload" and "ReloadFailed" in failed["traceback"]
        assert metric(playback.url, 'playback_task_failures_total{task="reload"}') == 1
        assert requests.get(playback.url + "/v1/titles/t1", timeout=5).status_code == 200
        health = requests.get(playback.url + "/healthz", timeout=5)
        assert health.status_code == 200 and health.json()["degraded"] == []  # one failure is not a streak

        config.write_text(playback_toml(origin, [NOWHERE], extra="catalog_cache_s = 2.0\n"))
        playback.proc.send_signal(signal.SIGHUP)  # the restarted task takes the next SIGHUP
        wait_until(lambda: playback.events("reloaded"), timeout_s=10)
    finally:
        assert playback.stop() == 0
    assert all(e["service"] == "playback" for e in playback.events())  # every line is one JSON event
