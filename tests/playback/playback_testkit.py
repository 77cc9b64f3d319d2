"""What the playback tests share (imported by name from here, not from conftest.py: the origin tests
have a conftest.py too, and two of them can't both be imported as `conftest` in one session)."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

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
