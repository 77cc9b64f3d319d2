"""Viewing events count in the region of their play: steering (a real `steering serve` in-process, fed
real heartbeats) locates each play's client and names its site; playback remembers it per client and
title, and that client's events for the title become demand in that site's region. Events with no play
behind them (another client) count in the replica's default region."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from contracts.demand import decode
from playback_testkit import PlaybackProcess, playback_toml
from test_playback_demand import AUDIO, TITLE, VIDEO, make_origin, session
from tests.steering.steer_helpers import AUTH, SITES, ServerThread, callers_toml, heartbeat, write_setup

FRA, AMS = "198.51.100.7", "192.0.2.55"  # clients inside the fra and ams prefixes (steer_helpers.SITES)


@pytest.fixture
def world(tmp_path: Path):
    config = write_setup(tmp_path / "steering", health={"missed_reports": 1000})
    with ServerThread(config) as srv:
        for site in SITES:
            for i in (1, 2, 3):
                assert srv.post_heartbeat(heartbeat(f"{site}-{i}", site)).status_code == 200
        callers = tmp_path / "callers.toml"
        callers.write_text(callers_toml('["demand"]'))
        extra = (f'trusted_proxies = ["127.0.0.1/32"]\ncallers_file = "{callers}"\n'
                 f'[demand]\nstate_dir = "{tmp_path / "spool"}"\nregion = "all"\nsource = "pb-1"\n')
        pb_config = tmp_path / "playback.toml"
        pb_config.write_text(playback_toml(make_origin(tmp_path / "origin"), [srv.url], extra))
        pb = PlaybackProcess(pb_config)
        try:
            yield pb
        finally:
            pb.stop()


def as_client(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}  # playback trusts 127.0.0.1, the test's own address


def test_events_count_in_the_site_steering_located_their_play_in(world: PlaybackProcess) -> None:
    pb = world
    for client, path in ((FRA, "master.m3u8"), (AMS, "manifest.mpd")):
        r = requests.get(f"{pb.url}/v1/playback/{TITLE}/{path}", headers=as_client(client), timeout=10)
        assert r.status_code == 200, r.text
    now_ms = time.time() * 1000
    for client in (FRA, AMS, "203.0.113.9"):  # the last never played: the default region
        r = requests.post(pb.url + "/v1/events", json=session(f"u-{client}", now_ms - 30_000),
                          headers=as_client(client), timeout=10)
        assert r.status_code == 202 and r.json() == {"accepted": 3}, r.text
    got = requests.get(pb.url + "/v1/demand", headers=AUTH, timeout=10)
    assert got.status_code == 200, got.text
    regions = decode(got.content).regions
    assert set(regions) == {"fra", "ams", "all"}
    for region in ("fra", "ams", "all"):  # one session each, the same amounts
        assert set(regions[region]) == {VIDEO, AUDIO}
        assert regions[region][VIDEO] == pytest.approx(regions["fra"][VIDEO], rel=1e-3)
    # and it survives a restart (the per-file region is in the spool)
    pb.proc.kill()
    pb.proc.wait(10)
    again = PlaybackProcess(pb.config)
    try:
        after = decode(requests.get(again.url + "/v1/demand", headers=AUTH, timeout=10).content).regions
        assert set(after) == {"fra", "ams", "all"}
    finally:
        again.stop()
