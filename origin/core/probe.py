"""What ffprobe's JSON (`-show_format -show_streams`) says about a source, as a SourceInfo.

Cover art (a video stream with disposition.attached_pic) is not the title's video. A frame rate comes
from avg_frame_rate, else r_frame_rate; the display aspect applies the sample aspect ratio, so an
anamorphic source is encoded with square pixels at its displayed shape.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any, Mapping

from origin.core.errors import SourceError
from origin.core.ladder import AudioStream, SourceInfo


def _ratio(raw: Any, sep: str = "/") -> Fraction | None:
    try:
        num, _, den = str(raw).partition(sep)
        value = Fraction(int(num), int(den or 1))
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def _float(raw: Any) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def source_info(probe: Mapping[str, Any], name: str = "source") -> SourceInfo:
    streams = probe.get("streams") or []
    videos = [s for s in streams if s.get("codec_type") == "video"
              and not (s.get("disposition") or {}).get("attached_pic")]
    if not videos:
        raise SourceError(f"{name}: has no video stream")
    v = videos[0]
    width, height = int(v.get("width") or 0), int(v.get("height") or 0)
    if width <= 0 or height <= 0:
        raise SourceError(f"{name}: the video stream has no dimensions")
    rate = _ratio(v.get("avg_frame_rate")) or _ratio(v.get("r_frame_rate"))
    if rate is None or rate > 240:
        raise SourceError(f"{name}: no usable frame rate ({v.get('avg_frame_rate')})")
    duration = _float((probe.get("format") or {}).get("duration")) or _float(v.get("duration"))
    if duration is None:
        raise SourceError(f"{name}: unknown duration")
    sar = _ratio(v.get("sample_aspect_ratio"), ":") or Fraction(1)
    audio = tuple(
        AudioStream(i, int(s.get("channels") or 0), (s.get("tags") or {}).get("language") or "und")
        for i, s in enumerate(x for x in streams if x.get("codec_type") == "audio")
    )
    return SourceInfo(duration_s=duration, width=width, height=height, frame_rate=round(float(rate), 6),
                      display_aspect=float(Fraction(width, height) * sar), audio=audio,
                      video_stream=int(v.get("index", 0)))
