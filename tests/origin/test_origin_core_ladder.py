"""Ladder plans, ffprobe parsing, ffmpeg argv, and the typed config with dotted-key errors."""
from __future__ import annotations

import tomllib

import pytest

from contracts.structconf import ConfigError
from origin.config import parse, parse_location
from origin.core import ffargs
from origin.core.errors import SourceError, UsageError
from origin.core.ladder import (
    DEFAULT_LADDER,
    AudioStream,
    Codec,
    EncodeSettings,
    SourceInfo,
    VideoRung,
    plan,
    validate_ladder,
)
from origin.core.probe import source_info

ALL = frozenset({"libx264", "libx265", "libsvtav1", "aac"})
HD = SourceInfo(duration_s=60, width=1920, height=1080, frame_rate=25, display_aspect=16 / 9,
                audio=(AudioStream(0, 6, "und"), AudioStream(1, 2, "fra")))


def names(p) -> list[str]:
    return [v.name for v in p.video]


def test_full_ladder_for_hd():
    p = plan(HD, DEFAULT_LADDER, EncodeSettings(), ALL, ("en",))
    assert names(p) == ["240p", "480p", "720p", "1080p", "720p-hevc", "1080p-hevc", "1080p-av1"]
    assert [(v.width, v.height) for v in p.video[:4]] == [(426, 240), (854, 480), (1280, 720), (1920, 1080)]
    assert all(v.gop_frames == 100 for v in p.video)  # 25 fps * 4 s
    assert [(a.name, a.language, a.channels) for a in p.audio] == [("audio-0-en", "en", 2), ("audio-1-fra", "fra", 2)]


def test_no_upscaling_and_missing_encoders():
    small = SourceInfo(30, 854, 480, 30, 854 / 480)
    p = plan(small, DEFAULT_LADDER, EncodeSettings(), frozenset({"libx264"}))
    assert names(p) == ["240p", "480p"]
    assert dict(p.skipped)["1080p"].startswith("taller") and dict(p.skipped)["720p-hevc"] == "ffmpeg has no libx265"
    upscaled = plan(small, DEFAULT_LADDER, EncodeSettings(allow_upscale=True), ALL)
    assert len(upscaled.video) == 7


def test_tiny_source_still_gets_an_h264_rendition():
    tiny = SourceInfo(5, 160, 90, 30, 16 / 9)
    p = plan(tiny, DEFAULT_LADDER, EncodeSettings(), ALL)
    assert [(v.name, v.height, v.codec) for v in p.video] == [("240p", 90, Codec.H264)]


def test_anamorphic_source_gets_square_pixels():
    dvd = SourceInfo(5, 720, 576, 25, 16 / 9)
    assert plan(dvd, DEFAULT_LADDER, EncodeSettings(), ALL).video[1].width == 854


@pytest.mark.parametrize("source,error", [
    (SourceInfo(5, 0, 0, 30, 1), "no video"),
    (SourceInfo(0, 320, 180, 30, 16 / 9), "duration"),
], ids=["no-video", "no-duration"])
def test_unusable_sources(source, error):
    with pytest.raises(SourceError, match=error):
        plan(source, DEFAULT_LADDER, EncodeSettings(), ALL)


def test_h264_encoder_is_required():
    with pytest.raises(SourceError, match="libx264"):
        plan(HD, DEFAULT_LADDER, EncodeSettings(), frozenset({"libx265"}))


@pytest.mark.parametrize("rungs,error", [
    ((VideoRung("a b", 240, 1),), "rung name"),
    ((VideoRung("audio", 240, 1),), "rung name"),
    ((VideoRung("x", 240, 1), VideoRung("x", 480, 1)), "unique"),
    ((VideoRung("x", 240, 1, Codec.HEVC),), "h264"),
], ids=["space", "audio-prefix", "duplicate", "no-h264"])
def test_validate_ladder(rungs, error):
    with pytest.raises(UsageError, match=error):
        validate_ladder(rungs)


def test_fingerprint_changes_with_settings():
    a = plan(HD, DEFAULT_LADDER, EncodeSettings(), ALL)
    b = plan(HD, DEFAULT_LADDER, EncodeSettings(segment_s=6), ALL)
    assert a.fingerprint() == plan(HD, DEFAULT_LADDER, EncodeSettings(), ALL).fingerprint() != b.fingerprint()


def test_encode_args():
    p = plan(HD, DEFAULT_LADDER, EncodeSettings(preset="ultrafast", segment_s=2), ALL)
    args = ffargs.encode_args("ffmpeg", "/in.mkv", p, "/out")
    joined = " ".join(args)
    assert args[:2] == ["ffmpeg", "-hide_banner"] and "-progress pipe:1" in joined
    assert "[0:0]split=7[s0][s1][s2][s3][s4][s5][s6]" in joined
    assert joined.count("-movflags +frag_keyframe+empty_moov+default_base_moof+global_sidx") == 7
    assert "/out/1080p-av1.mp4" in args and "/out/audio-1-fra.mp4" in args
    assert "expr:gte(t,n_forced*2)" in joined and "-sc_threshold 0" in joined and "-tag:v hvc1" in joined
    assert "-preset 12" in joined  # ultrafast mapped onto SVT-AV1
    assert args[args.index("-i") + 1] == "/in.mkv"


def probe_json(**video) -> dict:
    v = {"index": 0, "codec_type": "video", "width": 640, "height": 360, "avg_frame_rate": "30000/1001",
         "sample_aspect_ratio": "1:1"} | video
    return {"format": {"duration": "12.5"}, "streams": [
        {"index": 0, "codec_type": "video", "width": 300, "height": 300, "disposition": {"attached_pic": 1}},
        v | {"index": 1},
        {"index": 2, "codec_type": "audio", "channels": 2, "tags": {"language": "eng"}}]}


def test_source_info():
    info = source_info(probe_json())
    assert (info.width, info.height, info.video_stream, info.duration_s) == (640, 360, 1, 12.5)
    assert info.frame_rate == pytest.approx(29.97, abs=0.001)
    assert info.audio == (AudioStream(0, 2, "eng"),)
    assert source_info(probe_json(sample_aspect_ratio="4:3")).display_aspect == pytest.approx(640 * 4 / 3 / 360)
    assert source_info(probe_json(avg_frame_rate="0/0", r_frame_rate="25/1")).frame_rate == 25


@pytest.mark.parametrize("probe,error", [
    ({"streams": [{"codec_type": "audio"}]}, "no video"),
    (probe_json(avg_frame_rate="0/0", r_frame_rate="0/0"), "frame rate"),
    ({"streams": probe_json()["streams"], "format": {}}, "duration"),
], ids=["audio-only", "no-rate", "no-duration"])
def test_source_info_refusals(probe, error):
    with pytest.raises(SourceError, match=error):
        source_info(probe)


CONFIG_ERRORS = [
    ('[origin]\nlocation = "ftp://x"', "origin.location"),
    ('[origin]\nlocation = "s3://Bad_Bucket"', "origin.location"),
    ('[origin]\nlocation = "/x"\nendpoint_url = "http://h:1"', "origin.location: endpoint_url"),
    ("[s3]\nmax_attempts = 0", "s3.max_attempts: must be at least 1"),
    ("[s3]\nmultipart_chunk_bytes = 1024", "s3.multipart_chunk_bytes"),
    ('[s3]\nretry_mode = "legacy"', "s3.retry_mode"),
    ('[encode]\npreset = "turbo"', "encode.preset"),
    ('[[encode.ladder]]\nname = "x"\nheight = 241\nbitrate_bps = 100000', r"encode.ladder\[0\].height: must be even"),
    ('[[encode.ladder]]\nname = "x"\nheight = 240\nbitrate_bps = 100000\ncodec = "vp8"', r"encode.ladder\[0\].codec"),
    ('[[encode.ladder]]\nname = "x"\nheight = 240\nbitrate_bps = 100000\ncodec = "hevc"', "encode.ladder: .*h264"),
    ("[serve]\nport = 70000", "serve.port"),
    ("[serve]\nlisten_addr = 1", "serve.listen_addr: unknown setting"),
    ("[extra]\na = 1", "extra: unknown setting"),
]


@pytest.mark.parametrize("text,error", CONFIG_ERRORS, ids=[e[1][:30] for e in CONFIG_ERRORS])
def test_config_errors_name_the_key(text, error):
    with pytest.raises(ConfigError, match=error):
        parse(tomllib.loads(text))


def test_config_good(tmp_path):
    cfg = parse(tomllib.loads('[origin]\nlocation = "s3://media/origin/v1"\nendpoint_url = "http://127.0.0.1:9000"\n'
                              '[serve]\nkey_file = "keys.toml"\n[encode]\nwork_dir = "work"\n'), base=tmp_path)
    assert cfg.location.bucket == "media" and cfg.location.prefix == "origin/v1" and cfg.location.is_s3
    assert cfg.serve.key_file == tmp_path / "keys.toml" and cfg.encode.work_dir == tmp_path / "work"
    assert cfg.encode.ladder == DEFAULT_LADDER and cfg.s3.retry_mode == "adaptive"
    assert parse({}).location is None


@pytest.mark.parametrize("raw,expect", [
    ("s3://bucket", ("bucket", "")),
    ("s3://bucket/a/b/", ("bucket", "a/b")),
    ("relative/dir", None),
], ids=["bucket", "prefix", "relative"])
def test_parse_location(raw, expect, tmp_path):
    loc = parse_location(raw, base=tmp_path)
    if expect is None:
        assert loc.path == tmp_path / "relative/dir" and not loc.is_s3
    else:
        assert (loc.bucket, loc.prefix) == expect


def test_example_config_parses():
    from pathlib import Path

    from origin.config import load
    example = Path(__file__).resolve().parents[2] / "config" / "origin.example.toml"
    cfg = load(example)
    assert cfg.location is not None and len(cfg.encode.ladder) >= 4
