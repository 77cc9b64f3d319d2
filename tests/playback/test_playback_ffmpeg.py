"""ffmpeg plays a title end to end: playback's HLS master -> playback's media playlist -> signed byte
ranges on a steered appliance; every decoded video frame equals the origin file's (framemd5)."""
from __future__ import annotations

import subprocess

from playback_testkit import SAMPLE_FPS, SAMPLE_SECONDS, TITLE


def framemd5(source: str, stream: str = "0:v:0") -> list[str]:
    out = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", source, "-map", stream, "-f", "framemd5", "-"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return [line.split(",")[-1].strip() for line in out.stdout.splitlines() if line and not line.startswith("#")]


def test_ffmpeg_decodes_every_frame_through_playback(stack):
    url = f"{stack.playback.url}/v1/playback/{TITLE}/master.m3u8"
    played = framemd5(url)
    first_video = min((r for r in stack.entry["renditions"] if r["type"] == "video"), key=lambda r: r["bandwidth"])
    expected = framemd5(str(stack.folder / "origin" / first_video["key"]))
    assert len(played) == SAMPLE_SECONDS * SAMPLE_FPS
    assert played == expected


def test_ffmpeg_decodes_audio_through_playback(stack):
    url = f"{stack.playback.url}/v1/playback/{TITLE}/master.m3u8"
    audio = next(r for r in stack.entry["renditions"] if r["type"] == "audio")
    assert framemd5(url, "0:a:0") == framemd5(str(stack.folder / "origin" / audio["key"]), "0:a:0")
