"""Viewing events become demand (watched bytes per region and file) that survives the process: real
`playback serve` processes, events accepted and the process SIGKILLed and restarted, the demand read back
at GET /v1/demand (role "demand"; anonymous 401) and decoded with contracts.demand. Malformed events stay
4xx and count nothing; a spool that cannot be written refuses events (503) instead of losing them."""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from contracts.catalog import Metadata, Rendition, Segment, Span, TitleEntry
from contracts.demand import DemandReport, decay_to, decode
from origin.backends.local import LocalDirBackend
from origin.catalog import Catalog
from playback_testkit import PlaybackProcess, playback_toml
from tests.steering.steer_helpers import AUTH, callers_toml, free_port, wait_until

TITLE = "demo"
VIDEO, AUDIO = f"files/{TITLE}/v1/video.mp4", f"files/{TITLE}/v1/audio.mp4"
VIDEO_BPS, AUDIO_BPS = 800_000, 64_000  # average bit rates: 100,000 and 8,000 bytes a second


def make_origin(folder: Path) -> Path:
    """A local origin with one 60 s title: a video and an audio rendition (never fetched here)."""
    folder.mkdir(parents=True)

    def rendition(name: str, kind: str, key: str, bps: int, **kw) -> Rendition:
        return Rendition(name=name, kind=kind, key=key, size=10**6, xxh3="0" * 16, codec="avc1.64001f",
                         bandwidth=bps, average_bandwidth=bps, init=Span(0, 10), index=None,
                         segments=(Segment(0, 10**6, 60.0),), playlist=key.replace(".mp4", ".m3u8"), **kw)
    Catalog(LocalDirBackend(folder)).put(TitleEntry(
        meta=Metadata(TITLE, "Demo"), version="v1", duration_s=60.0,
        renditions=(rendition("360p", "video", VIDEO, VIDEO_BPS, width=640, height=360, frame_rate=25.0),
                    rendition("audio", "audio", AUDIO, AUDIO_BPS, language="en", channels=2, sample_rate=48000)),
        assets=(), master=f"files/{TITLE}/v1/master.m3u8", dash=f"files/{TITLE}/v1/manifest.mpd", poster=None))
    return folder


def write_config(tmp_path: Path, compact_s: float = 3600.0, state_dir: Path | None = None) -> Path:
    callers = tmp_path / "callers.toml"
    callers.write_text(callers_toml('["demand"]'))
    spool = state_dir or tmp_path / "spool"
    extra = (f'callers_file = "{callers}"\n[demand]\nstate_dir = "{spool}"\nregion = "ams"\nsource = "pb-1"\n'
             f'compact_interval_s = {compact_s}\n')
    config = tmp_path / "playback.toml"
    # steering is never asked: events and demand do not steer
    config.write_text(playback_toml(make_origin(tmp_path / "origin"), [f"http://127.0.0.1:{free_port()}"], extra))
    return config


def session(user: str, start_ms: float) -> list[dict]:
    """play at 0, progress at 10 s, stop at 20 s: two 10 s steps watched."""
    ev = {"userId": user, "videoId": TITLE, "event": "play", "timestamp": start_ms, "position": 0}
    return [ev, {**ev, "event": "progress", "position": 10, "timestamp": start_ms + 10_000},
            {**ev, "event": "stop", "position": 20, "timestamp": start_ms + 20_000}]


def post(url: str, body) -> requests.Response:
    sent = {"data": body} if isinstance(body, str) else {"json": body}
    return requests.post(url + "/v1/events", timeout=10, **sent)


def demand(pb: PlaybackProcess) -> DemandReport:
    r = requests.get(pb.url + "/v1/demand", headers=AUTH, timeout=10)
    assert r.status_code == 200, r.text
    return decode(r.content)


def flat(regions: dict) -> dict:
    return {(region, key, i): pair[i] for region, files in regions.items() for key, pair in files.items()
            for i in (0, 1)}


def expected(sessions: int) -> dict:
    """Two steps of 10 s per session: 2 requests and 20 s of each file's bit rate."""
    return flat({"ams": {VIDEO: (2.0 * sessions, 20 * VIDEO_BPS / 8 * sessions),
                         AUDIO: (2.0 * sessions, 20 * AUDIO_BPS / 8 * sessions)}})


def kill(pb: PlaybackProcess) -> None:
    pb.proc.send_signal(signal.SIGKILL)
    pb.proc.wait(10)


def test_accepted_events_survive_sigkill_and_malformed_ones_count_nothing(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    pb = PlaybackProcess(config)
    try:
        now_ms = time.time() * 1000
        assert post(pb.url, {"events": session("u1", now_ms)}).status_code == 202
        before = demand(pb)
        assert (before.source, before.kind) == ("pb-1", "playback")
        assert flat(before.regions) == pytest.approx(expected(1), rel=1e-3)

        ev = session("u2", now_ms)[1]
        for bad in ([ev, {**ev, "event": "rewind"}], {**ev, "videoId": "nope"}, {**ev, "position": "x"},
                    {**ev, "position": 999}, {**ev, "extra": 1}, "[]", "{", "[" * 5000):
            r = post(pb.url, bad)
            assert 400 <= r.status_code < 500, (bad, r.status_code, r.text)
        assert flat(demand(pb).regions) == pytest.approx(flat(before.regions), rel=1e-4)

        anonymous = requests.get(pb.url + "/v1/demand", timeout=5)
        assert anonymous.status_code == 401 and anonymous.json()["error"] == "unauthorized"
        wrong = requests.get(pb.url + "/v1/demand", headers={"Authorization": "Bearer nope"}, timeout=5)
        assert wrong.status_code == 401
        kill(pb)  # no SIGTERM: no last compaction, no cleanup of any kind
    finally:
        pb.stop()

    again = PlaybackProcess(config)
    try:
        after = demand(again)
        assert again.events("demand-restored")[0]["replayed"] == 1  # one batch, from the log
    finally:
        again.stop()
    assert after.at > before.at
    assert flat(after.regions) == pytest.approx(flat(decay_to(before, after.at)), rel=1e-4)


def test_a_compacted_snapshot_and_the_log_after_it_both_survive(tmp_path: Path) -> None:
    config = write_config(tmp_path, compact_s=0.5)
    pb = PlaybackProcess(config)
    try:
        now_ms = time.time() * 1000
        assert post(pb.url, session("u1", now_ms)).status_code == 202
        wait_until(lambda: pb.events("demand-compacted"), timeout_s=10)
        assert post(pb.url, session("u2", now_ms)).status_code == 202  # in the log, or compacted too
        kill(pb)
    finally:
        pb.stop()
    again = PlaybackProcess(config)
    try:
        assert flat(demand(again).regions) == pytest.approx(expected(2), rel=1e-3)
    finally:
        again.stop()


def test_concurrent_batches_are_all_durable(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    pb = PlaybackProcess(config)
    statuses: list[int] = []
    try:
        now_ms = time.time() * 1000

        def one(i: int) -> None:
            statuses.append(post(pb.url, session(f"user-{i}", now_ms)).status_code)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert statuses == [202] * 24
        kill(pb)
    finally:
        pb.stop()
    again = PlaybackProcess(config)
    try:
        assert flat(demand(again).regions) == pytest.approx(expected(24), rel=1e-3)
    finally:
        again.stop()


def test_a_spool_that_cannot_be_written_refuses_events(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spool's parent should be\n")
    pb = PlaybackProcess(write_config(tmp_path, compact_s=0.2, state_dir=blocker / "spool"))
    try:
        r = post(pb.url, session("u1", time.time() * 1000))
        assert r.status_code == 503 and r.json()["error"] == "demand-spool-unavailable"
        assert r.headers["Retry-After"]
        assert demand(pb).regions == {}  # nothing counted that could be lost
        assert pb.events("demand-spool-unavailable")
        wait_until(lambda: "demand-compact" in requests.get(pb.url + "/healthz", timeout=5).json()["degraded"],
                   timeout_s=20)
    finally:
        pb.stop()
