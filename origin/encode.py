"""Running ffmpeg and ffprobe: probe a source, encode a plan (with progress), make a poster or a sample.

The command lines come from origin.core.ffargs; this module only runs them. ffmpeg's log goes to a
file beside the outputs so a failure can quote its last lines; `-progress pipe:1` reports out_time,
which drives the progress bar.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Callable

from origin.core import ffargs
from origin.core.errors import EncodeError, SourceError, ToolMissing
from origin.core.ladder import Plan, SourceInfo
from origin.core.probe import source_info

_LOG_TAIL = 8


def _run(args: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, text=True, **kwargs)
    except FileNotFoundError:
        raise ToolMissing(f"{args[0]} not found: install ffmpeg or set encode.ffmpeg/encode.ffprobe") from None


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-_LOG_TAIL:]) or "(no message)"


@functools.lru_cache(maxsize=8)
def encoders(ffmpeg: str) -> frozenset[str]:
    """Names of the encoders the local ffmpeg was built with."""
    result = _run([ffmpeg, "-hide_banner", "-encoders"], "list encoders")
    names = set()
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] in "VAS":
            names.add(parts[1])
    return frozenset(names)


def probe(ffprobe: str, source: Path) -> SourceInfo:
    if not source.is_file():
        raise SourceError(f"{source}: no such file")
    result = _run([ffprobe, "-v", "error", "-print_format", "json", "-show_format", "-show_streams",
                   str(source)], "probe")
    if result.returncode != 0:
        raise SourceError(f"{source}: not a media file ffprobe can read: {_tail(result.stderr)}")
    try:
        return source_info(json.loads(result.stdout), name=str(source))
    except json.JSONDecodeError:
        raise SourceError(f"{source}: ffprobe gave no readable answer") from None


def encode(ffmpeg: str, source: Path, plan: Plan, out_dir: Path, threads: int = 0,
           progress: Callable[[float], None] | None = None) -> None:
    """Write every rendition of `plan` to out_dir/<name>.mp4; progress gets seconds newly encoded
    (never past the planned duration: audio priming can run a few ms beyond it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    args = ffargs.encode_args(ffmpeg, str(source), plan, str(out_dir), threads)
    log_path = out_dir / "ffmpeg.log"
    env = {**os.environ, "SVT_LOG": "1"}  # SVT-AV1 prints its banner to stderr unless told
    try:
        with open(log_path, "w") as log:
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    except FileNotFoundError:
        raise ToolMissing(f"{ffmpeg} not found: install ffmpeg or set encode.ffmpeg") from None
    done = 0.0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            key, _, value = line.strip().partition("=")
            if key == "out_time_us" and value.lstrip("-").isdigit() and progress is not None:
                now = min(plan.duration_s, max(0.0, int(value) / 1e6))
                if now > done:
                    progress(now - done)
                    done = now
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if code != 0:
        raise EncodeError(f"ffmpeg failed on {source} (exit {code}): {_tail(log_path.read_text())}")


def poster(ffmpeg: str, source: Path, at_s: float, height: int, out_path: Path) -> None:
    result = _run(ffargs.poster_args(ffmpeg, str(source), at_s, height, str(out_path)), "poster")
    if result.returncode != 0 or not out_path.is_file() or out_path.stat().st_size == 0:
        raise EncodeError(f"ffmpeg could not take a poster frame from {source}: {_tail(result.stderr)}")


def sample(ffmpeg: str, out_path: Path, seconds: float, width: int, height: int, fps: int) -> Path:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    result = _run(ffargs.sample_args(ffmpeg, str(out_path), seconds, width, height, fps), "sample")
    if result.returncode != 0:
        raise EncodeError(f"ffmpeg could not make the sample: {_tail(result.stderr)}")
    return out_path
