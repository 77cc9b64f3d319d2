"""ffmpeg command lines, built as lists (never through a shell) from a Plan.

One ffmpeg run decodes the source once and writes every rendition: a split filter feeds one scaler per
rung, each output is a single-track fragmented MP4 with a global sidx (`frag_keyframe` cuts a fragment
at each keyframe; keyframes are forced every segment_s and scene cuts are off, so fragments are the
segments). `bitexact` and dropped metadata keep the bytes reproducible where the encoder is.
"""
from __future__ import annotations

from origin.core.ladder import Codec, Plan, PlannedAudio, PlannedVideo

_MOVFLAGS = "+frag_keyframe+empty_moov+default_base_moof+global_sidx"
_AUDIO_MOVFLAGS = "+empty_moov+default_base_moof+global_sidx"
_BITEXACT = ["-map_metadata", "-1", "-map_chapters", "-1", "-flags", "+bitexact", "-fflags", "+bitexact"]
_SVT_PRESETS = {"ultrafast": 12, "superfast": 11, "veryfast": 10, "faster": 9, "fast": 8, "medium": 7,
                "slow": 6, "slower": 5, "veryslow": 4, "placebo": 2}
PRESETS = tuple(_SVT_PRESETS)


def encode_args(ffmpeg: str, source: str, plan: Plan, out_dir: str, threads: int = 0) -> list[str]:
    """Encode `source` into `out_dir/<name>.mp4` for every rendition of `plan`; progress on stdout."""
    args = [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-progress", "pipe:1",
            "-y", "-i", source]
    if threads:
        args += ["-threads", str(threads)]
    splits = "".join(f"[s{i}]" for i in range(len(plan.video)))
    chains = [f"[0:{plan.video_stream}]split={len(plan.video)}{splits}"] + [
        f"[s{i}]scale={v.width}:{v.height}:flags=bicubic,setsar=1,format=yuv420p[v{i}]"
        for i, v in enumerate(plan.video)
    ]
    args += ["-filter_complex", ";".join(chains)]
    for i, video in enumerate(plan.video):
        args += ["-map", f"[v{i}]", *_video_codec_args(video, plan), "-an", "-sn", "-dn", *_BITEXACT,
                 "-movflags", _MOVFLAGS, "-f", "mp4", f"{out_dir}/{video.name}.mp4"]
    for audio in plan.audio:
        args += _audio_args(audio, plan, out_dir)
    return args


def _video_codec_args(v: PlannedVideo, plan: Plan) -> list[str]:
    kbps, preset = v.bitrate_bps // 1000, plan.settings.preset
    keyframes = ["-force_key_frames", f"expr:gte(t,n_forced*{plan.settings.segment_s:g})"]
    rate = ["-b:v", str(v.bitrate_bps)]
    if v.codec is Codec.H264:
        return ["-c:v", v.encoder, "-preset", preset, "-profile:v", "high", *rate,
                "-maxrate", str(v.bitrate_bps * 3 // 2), "-bufsize", str(v.bitrate_bps * 2),
                "-g", str(v.gop_frames), "-keyint_min", str(v.gop_frames), "-sc_threshold", "0", *keyframes]
    if v.codec is Codec.HEVC:
        params = (f"log-level=error:keyint={v.gop_frames}:min-keyint={v.gop_frames}:scenecut=0:open-gop=0"
                  f":vbv-maxrate={kbps * 3 // 2}:vbv-bufsize={kbps * 2}")
        return ["-c:v", v.encoder, "-preset", preset, "-tag:v", "hvc1", *rate, "-forced-idr", "1",
                "-x265-params", params, *keyframes]
    # SVT-AV1 (ffmpeg 5.1) ignores forced keyframes; its closed GOP of gop_frames gives the same cuts
    return ["-c:v", v.encoder, "-preset", str(_SVT_PRESETS.get(preset, 10)), *rate,
            "-g", str(v.gop_frames)]


def _audio_args(a: PlannedAudio, plan: Plan, out_dir: str) -> list[str]:
    return ["-map", f"0:a:{a.stream_index}", "-c:a", "aac", "-b:a", str(a.bitrate_bps), "-ac", str(a.channels),
            "-ar", "48000", "-vn", "-sn", "-dn", *_BITEXACT,
            "-frag_duration", str(int(plan.settings.segment_s * 1_000_000)),
            "-movflags", _AUDIO_MOVFLAGS, "-f", "mp4", f"{out_dir}/{a.name}.mp4"]


def poster_args(ffmpeg: str, source: str, at_s: float, height: int, out_path: str) -> list[str]:
    """One JPEG frame at `at_s` seconds, `height` pixels tall."""
    return [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-ss", f"{at_s:.3f}",
            "-i", source, "-frames:v", "1", "-vf", f"scale=-2:{height}:flags=bicubic,format=yuvj420p",
            "-q:v", "3", *_BITEXACT, "-f", "image2", out_path]


def sample_args(ffmpeg: str, out_path: str, seconds: float, width: int, height: int, fps: int) -> list[str]:
    """A test pattern with a 1 kHz-ish tone: a title made in seconds for the lab and the tests."""
    return [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds:g}",
            "-f", "lavfi", "-i", f"sine=frequency=880:beep_factor=2:sample_rate=48000:duration={seconds:g}",
            "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p",
            "-g", str(fps), "-c:a", "aac", "-b:a", "128k", "-shortest", *_BITEXACT, out_path]


def poster_time(duration_s: float) -> float:
    """A frame a little into the title (past any black lead-in), never past its end."""
    return min(10.0, duration_s / 3)
