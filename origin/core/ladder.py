"""The ABR ladder: which renditions a source becomes, decided from what ffprobe saw and which encoders
the local ffmpeg has. H.264 rungs are required; HEVC and AV1 rungs are made where the encoder exists.

No rung is taller than the source unless `allow_upscale` (upscaling spends bits on nothing); if that
leaves no video rung, the lowest one is made at the source's height. Every rung keeps the source's
frame rate, and its keyframes fall every `segment_s`, so fragments (= segments) line up across rungs.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from enum import Enum

from origin.core.errors import SourceError, UsageError

RENDITION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")


class Codec(str, Enum):
    H264 = "h264"
    HEVC = "hevc"
    AV1 = "av1"


ENCODERS = {Codec.H264: "libx264", Codec.HEVC: "libx265", Codec.AV1: "libsvtav1"}


@dataclass(frozen=True)
class VideoRung:
    name: str  # file name stem: "720p", "1080p-hevc"
    height: int
    bitrate_bps: int
    codec: Codec = Codec.H264


DEFAULT_LADDER = (
    VideoRung("240p", 240, 400_000),
    VideoRung("480p", 480, 1_200_000),
    VideoRung("720p", 720, 3_000_000),
    VideoRung("1080p", 1080, 5_800_000),
    VideoRung("720p-hevc", 720, 1_800_000, Codec.HEVC),
    VideoRung("1080p-hevc", 1080, 3_500_000, Codec.HEVC),
    VideoRung("1080p-av1", 1080, 2_500_000, Codec.AV1),
)


@dataclass(frozen=True)
class AudioStream:
    index: int  # among the source's audio streams (ffmpeg's 0:a:N)
    channels: int
    language: str  # "und" when the source does not say


@dataclass(frozen=True)
class SourceInfo:
    duration_s: float
    width: int
    height: int
    frame_rate: float
    display_aspect: float  # width/height as displayed (sample aspect ratio applied)
    audio: tuple[AudioStream, ...] = ()
    video_stream: int = 0  # absolute stream index (cover art streams are not the video)


@dataclass(frozen=True)
class EncodeSettings:
    preset: str = "veryfast"  # x264/x265 preset; mapped onto SVT-AV1's 0..13
    segment_s: float = 4.0
    audio_bitrate_bps: int = 128_000
    audio_channels: int = 2
    allow_upscale: bool = False
    poster_height: int = 360


@dataclass(frozen=True)
class PlannedVideo:
    name: str
    codec: Codec
    encoder: str
    width: int
    height: int
    bitrate_bps: int
    gop_frames: int


@dataclass(frozen=True)
class PlannedAudio:
    name: str
    stream_index: int
    language: str
    bitrate_bps: int
    channels: int


@dataclass(frozen=True)
class Plan:
    video: tuple[PlannedVideo, ...]
    audio: tuple[PlannedAudio, ...]
    skipped: tuple[tuple[str, str], ...]  # (rung name, why)
    settings: EncodeSettings
    frame_rate: float
    duration_s: float
    video_stream: int = 0

    def fingerprint(self) -> str:
        """Names everything that shapes the output, so the same source + plan → the same encode."""
        blob = json.dumps(asdict(self), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def validate_ladder(rungs: tuple[VideoRung, ...]) -> tuple[VideoRung, ...]:
    names = [r.name for r in rungs]
    for rung in rungs:
        if not RENDITION_NAME.fullmatch(rung.name) or rung.name.startswith("audio"):
            raise UsageError(f"ladder rung name {rung.name!r}: 1-32 of [A-Za-z0-9_-], not starting with 'audio'")
    if len(set(names)) != len(names):
        raise UsageError("ladder rung names must be unique")
    if not any(r.codec is Codec.H264 for r in rungs):
        raise UsageError("the ladder needs at least one h264 rung (every player decodes it)")
    return rungs


def plan(
    source: SourceInfo,
    rungs: tuple[VideoRung, ...],
    settings: EncodeSettings,
    encoders: frozenset[str],
    languages: tuple[str, ...] = (),
) -> Plan:
    """The renditions to encode, or SourceError when the source cannot make a title."""
    if source.width <= 0 or source.height <= 0:
        raise SourceError("the source has no video stream")
    if not source.frame_rate > 0 or source.duration_s <= 0:
        raise SourceError("the source has no usable frame rate or duration")
    gop = max(1, round(source.frame_rate * settings.segment_s))
    video, skipped = [], []
    for rung in rungs:
        encoder = ENCODERS[rung.codec]
        if encoder not in encoders:
            if rung.codec is Codec.H264:
                raise SourceError(f"the local ffmpeg lacks {encoder}, which the ladder needs")
            skipped.append((rung.name, f"ffmpeg has no {encoder}"))
        elif rung.height > source.height and not settings.allow_upscale:
            skipped.append((rung.name, f"taller than the source ({source.height}p)"))
        else:
            video.append(_video(rung, rung.height, source, encoder, gop))
    if not any(v.codec is Codec.H264 for v in video):
        lowest = min((r for r in rungs if r.codec is Codec.H264), key=lambda r: r.height)
        skipped = [s for s in skipped if s[0] != lowest.name]
        video.insert(0, _video(lowest, source.height - source.height % 2, source, ENCODERS[Codec.H264], gop))
    audio = tuple(_audio(stream, settings, languages) for stream in source.audio)
    return Plan(tuple(video), audio, tuple(skipped), settings, source.frame_rate, source.duration_s,
                source.video_stream)


def _video(rung: VideoRung, height: int, source: SourceInfo, encoder: str, gop: int) -> PlannedVideo:
    width = max(2, round(height * source.display_aspect / 2) * 2)
    return PlannedVideo(rung.name, rung.codec, encoder, width, height, rung.bitrate_bps, gop)


def _audio(stream: AudioStream, settings: EncodeSettings, languages: tuple[str, ...]) -> PlannedAudio:
    language = stream.language
    if language == "und" and stream.index < len(languages):
        language = languages[stream.index]
    name = f"audio-{stream.index}-{re.sub(r'[^A-Za-z0-9-]', '', language) or 'und'}"
    channels = min(settings.audio_channels, stream.channels) if stream.channels > 0 else settings.audio_channels
    return PlannedAudio(name, stream.index, language, settings.audio_bitrate_bps, channels)
