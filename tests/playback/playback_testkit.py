"""What the playback tests share (imported by name from here, not from conftest.py: the origin tests
have a conftest.py too, and two of them can't both be imported as `conftest` in one session)."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

TITLE = "sample"
SAMPLE_SECONDS = 24
SAMPLE_FPS = 24


class PlaybackProcess:
    def __init__(self, config: Path) -> None:
        self.config = config
        self.log = config.parent / "playback.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "playback.cli", "serve", "-c", str(config)],
                                         stdout=subprocess.PIPE, stderr=log, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("listening "):
            self.proc.kill()
            raise RuntimeError(f"playback did not start: {line!r}\n{self.log.read_text()[-2000:]}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def playback_toml(origin: Path, steering_urls: list[str], extra: str = "") -> str:
    urls = ", ".join(f'"{u}"' for u in steering_urls)
    return f"""
[playback]
listen = "127.0.0.1"
port = 0
steering_urls = [{urls}]
steering_timeout_s = 1.0
fleet_cache_s = 0.2
steering_ttl_s = 1
drain_grace_s = 0.1
{extra}
[origin]
location = "{origin}"
"""
