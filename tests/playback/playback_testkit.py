"""What the playback tests share (imported by name from here, not from conftest.py: the origin tests
have a conftest.py too, and two of them can't both be imported as `conftest` in one session)."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from contracts.catalog import Metadata, Rendition, Segment, Span, TitleEntry
from origin.backends.local import LocalDirBackend
from origin.catalog import Catalog
from tests.steering.steer_helpers import OPERATOR_TOKEN, log_events, wait_for_port

TITLE = "sample"
SAMPLE_SECONDS = 24
SAMPLE_FPS = 24


class PlaybackProcess:
    """`playback serve -c CONFIG` as a real OS process; its log (stdout, one JSON event a line) in
    playback.log beside the config, the port read from the `listening` event."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.log = config.parent / "playback.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "playback.cli", "serve", "-c", str(config)],
                                         stdout=log, stderr=subprocess.STDOUT)
        self.port = wait_for_port(self.proc, self.log)
        self.url = f"http://127.0.0.1:{self.port}"

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        return log_events(self.log, event)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def playback_toml(origin: Path, steering_urls: list[str], extra: str = "") -> str:
    """Playback's config; its credential at steering (the test operator's token) beside the origin."""
    urls = ", ".join(f'"{u}"' for u in steering_urls)
    token_file = Path(origin).parent / "playback.token"
    token_file.write_text(OPERATOR_TOKEN + "\n")
    return f"""
[playback]
listen = "127.0.0.1"
port = 0
steering_urls = [{urls}]
steering_token_file = "{token_file}"
steering_timeout_s = 1.0
fleet_cache_s = 0.2
steering_ttl_s = 1
drain_grace_s = 0.1
{extra}
[origin]
location = "{origin}"
"""


def origin_with_title(folder: Path, title_id: str) -> Path:
    """A local origin whose catalog holds one 4 s title (its files are never fetched here)."""
    folder.mkdir(parents=True)
    key = f"files/{title_id}/v1/video.mp4"
    video = Rendition(name="video", kind="video", key=key, size=1000, xxh3="0" * 16, codec="avc1.64001f",
                      bandwidth=1_000_000, average_bandwidth=900_000, init=Span(0, 10), index=None,
                      segments=(Segment(0, 1000, 4.0),), playlist=f"files/{title_id}/v1/video.m3u8",
                      width=640, height=360, frame_rate=25.0)
    Catalog(LocalDirBackend(folder)).put(TitleEntry(
        meta=Metadata(title_id, f"Title {title_id}"), version="v1", duration_s=4.0, renditions=(video,),
        assets=(), master=f"files/{title_id}/v1/master.m3u8", dash=f"files/{title_id}/v1/manifest.mpd", poster=None))
    return folder
