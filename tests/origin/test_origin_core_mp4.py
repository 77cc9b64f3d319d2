"""origin.core.mp4 and origin.core.codecs on files built box by box here (so every fault can be made
on purpose), and on a real encode from the session."""
from __future__ import annotations

import struct

import pytest

from origin.analyze import layout_of, read_boxes
from origin.core.codecs import parse_sample_entry
from origin.core.errors import MediaError
from origin.core.mp4 import TopBox, analyze, parse_header

NON_SYNC = 0x00010000
TIMESCALE = 1000


def box(kind: str, body: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind.encode()) + body


def full(kind: str, flags: int, body: bytes, version: int = 0) -> bytes:
    return box(kind, bytes([version]) + flags.to_bytes(3, "big") + body)


def avc1(width=320, height=180, config=bytes([1, 0x64, 0x00, 0x1F, 0xFF])) -> bytes:
    visual = bytes(6) + struct.pack(">H", 1) + bytes(16) + struct.pack(">HH", width, height) + bytes(50)
    return box("avc1", visual + box("avcC", config))


def moov(entry: bytes = b"", tracks: int = 1, track_id: int = 1, default_duration: int = 0) -> bytes:
    entry = entry or avc1()
    lang = ((ord("e") - 0x60) << 10) | ((ord("n") - 0x60) << 5) | (ord("g") - 0x60)
    trak = box("trak", full("tkhd", 3, bytes(8) + struct.pack(">I", track_id) + bytes(68)) + box(
        "mdia", full("mdhd", 0, bytes(8) + struct.pack(">IIH", TIMESCALE, 0, lang) + bytes(2))
        + box("minf", box("stbl", full("stsd", 0, struct.pack(">I", 1) + entry)))))
    trex = full("trex", 0, struct.pack(">IIIII", track_id, 1, default_duration, 0, 0))
    return box("moov", trak * tracks + box("mvex", trex))


def moof(durations: list[int], first_flags: int = 0, track_id: int = 1) -> bytes:
    tfhd = full("tfhd", 0x020000, struct.pack(">I", track_id))
    samples = b"".join(struct.pack(">II", d, 100) for d in durations)
    trun = full("trun", 0x01 | 0x04 | 0x100 | 0x200, struct.pack(">IiI", len(durations), 0, first_flags) + samples)
    return box("moof", full("mfhd", 0, struct.pack(">I", 1)) + box("traf", tfhd + full("tfdt", 0, bytes(4)) + trun))


def sidx(anchor_gap: int, refs: list[tuple[int, int]]) -> bytes:
    body = struct.pack(">IIIIHH", 1, TIMESCALE, 0, anchor_gap, 0, len(refs))
    body += b"".join(struct.pack(">III", size, duration, 0x90000000) for size, duration in refs)
    return full("sidx", 0, body)


def build(fragments=((1000, 1000), (1000, 500)), with_sidx=True, first_flags=0, moov_box=None, tail=b""):
    """ftyp moov [sidx] (moof mdat)*: each fragment is (samples duration sum split in two, ...)."""
    frags = [moof([d // 2, d - d // 2], first_flags) + box("mdat", bytes(200)) for d in (f[0] for f in fragments)]
    head = box("ftyp", b"isom" + bytes(4)) + (moov_box or moov())
    refs = [(len(f), d[0]) for f, d in zip(frags, fragments, strict=True)]
    index = sidx(0, refs) if with_sidx else b""
    return head + index + b"".join(frags) + tail


def boxes_of(data: bytes) -> list[TopBox]:
    out, offset = [], 0
    while offset < len(data):
        kind, size, header = parse_header(data[offset:offset + 16], offset, len(data))
        payload = data[offset + header:offset + size] if kind in ("moov", "sidx", "moof") else None
        out.append(TopBox(kind, offset, size, payload))
        offset += size
    return out


def test_layout_of_a_built_file():
    data = build()
    lay = analyze(boxes_of(data), len(data))
    ftyp_moov = data.index(b"sidx") - 4
    assert lay.init.offset == 0 and lay.init.length == ftyp_moov
    assert lay.index is not None and lay.index.offset == ftyp_moov
    assert [f.duration for f in lay.fragments] == [1000, 1000]
    assert lay.fragments[0].offset == lay.index.end and lay.fragments[-1].offset + lay.fragments[-1].length == len(data)
    assert lay.duration_s == 2.0 and lay.frame_rate == 2.0 and lay.language == "eng"
    assert lay.entry.codec == "avc1.64001f" and (lay.entry.width, lay.entry.height) == (320, 180)


def test_without_sidx_and_with_trailing_boxes():
    data = build(with_sidx=False, tail=box("mfra", bytes(8)))
    lay = analyze(boxes_of(data), len(data))
    assert lay.index is None and len(lay.fragments) == 2


def test_styp_belongs_to_the_fragment():
    data = box("ftyp", b"isom" + bytes(4)) + moov() + box("styp", b"msdh" + bytes(4)) + moof([10]) + box("mdat", b"x")
    lay = analyze(boxes_of(data), len(data))
    assert lay.fragments[0].offset == data.index(b"styp") - 4


def _patch_sidx_size(data: bytes) -> bytes:
    at = data.index(b"sidx") + 4 + 24  # first reference
    return data[:at] + struct.pack(">I", 7) + data[at + 4:]


FAULTS = [
    ("no-moov", lambda: box("ftyp", bytes(8)) + moof([1]) + box("mdat"), "no moov"),
    ("not-fragmented", lambda: box("ftyp", bytes(8)) + moov() + box("mdat", bytes(10)), "not a fragmented MP4"),
    ("two-tracks", lambda: build(moov_box=moov(tracks=2)), "2 tracks"),
    ("not-a-keyframe", lambda: build(first_flags=NON_SYNC), "does not start with a keyframe"),
    ("sidx-disagrees", lambda: _patch_sidx_size(build()), "sidx subsegment 0"),
    ("moof-without-mdat", lambda: box("ftyp", bytes(8)) + moov() + moof([1]), "no mdat"),
    ("other-track", lambda: box("ftyp", bytes(8)) + moov(track_id=2) + moof([1]) + box("mdat"), "another track"),
    ("encrypted", lambda: build(moov_box=moov(entry=box("encv", bytes(78)))), "unsupported sample entry"),
]


@pytest.mark.parametrize("make,message", [(f[1], f[2]) for f in FAULTS], ids=[f[0] for f in FAULTS])
def test_faults_are_named(make, message):
    data = make()
    with pytest.raises(MediaError, match=message):
        analyze(boxes_of(data), len(data))


def test_truncated_file():
    data = build()
    with pytest.raises(MediaError, match="claims"):
        boxes_of(data[:-10])


def test_largesize_header():
    header = struct.pack(">I4sQ", 1, b"mdat", 16 + 4)
    assert parse_header(header, 0, 20) == ("mdat", 20, 16)


def _hvcc(space_tier_profile, compat, constraints, level) -> bytes:
    return bytes([1, space_tier_profile]) + struct.pack(">I", compat) + bytes(constraints) + bytes([level]) + bytes(10)


def _visual(kind, config_box, config) -> tuple[str, bytes]:
    body = bytes(6) + struct.pack(">H", 1) + bytes(16) + struct.pack(">HH", 64, 64) + bytes(50)
    return kind, body + box(config_box, config)


def _esds(object_type=0x40, asc=bytes([0x12, 0x10])) -> bytes:
    dsi = bytes([0x05, len(asc)]) + asc
    dcd = bytes([0x04, 13 + len(dsi), object_type, 0x15]) + bytes(11) + dsi
    es = bytes([0x03, 3 + len(dcd)]) + bytes([0, 1, 0]) + dcd
    return bytes(4) + es


def _audio(kind, extra=b"") -> tuple[str, bytes]:
    body = bytes(6) + struct.pack(">H", 1) + bytes(8) + struct.pack(">HHHHI", 2, 16, 0, 0, 48000 << 16)
    return kind, body + extra


CODECS = [
    ("avc-high-3.1", _visual("avc1", "avcC", bytes([1, 0x64, 0, 0x1F])), "avc1.64001f"),
    ("avc3-baseline", _visual("avc3", "avcC", bytes([1, 0x42, 0xC0, 0x1E])), "avc3.42c01e"),
    ("hevc-main10", _visual("hvc1", "hvcC", _hvcc(0x02, 0x20000000, [0xB0, 0, 0, 0, 0, 0], 123)), "hvc1.2.4.L123.B0"),
    ("hevc-main-high-tier", _visual("hev1", "hvcC", _hvcc(0x21, 0x60000000, [0x90, 0, 0, 0, 0, 0], 120)),
     "hev1.1.6.H120.90"),
    ("av1-main-8bit", _visual("av01", "av1C", bytes([0x81, 0x04, 0x0C, 0])), "av01.0.04M.08"),
    ("av1-high-10bit", _visual("av01", "av1C", bytes([0x81, 0x2D, 0xCC, 0])), "av01.1.13H.10"),
    ("vp9", _visual("vp09", "vpcC", bytes([1, 0, 0, 0, 0, 31, 0x80, 0, 0, 0, 0, 0])), "vp09.00.31.08"),
    ("aac-lc", _audio("mp4a", box("esds", _esds())), "mp4a.40.2"),
    ("he-aac", _audio("mp4a", box("esds", _esds(asc=bytes([0x28, 0x10])))), "mp4a.40.5"),
    ("mp3", _audio("mp4a", box("esds", _esds(object_type=0x6B, asc=b""))), "mp4a.6b"),
    ("opus", _audio("Opus", box("dOps", bytes(11))), "opus"),
]


@pytest.mark.parametrize("fourcc_body,codec", [(c[1], c[2]) for c in CODECS], ids=[c[0] for c in CODECS])
def test_codec_strings(fourcc_body, codec):
    entry = parse_sample_entry(*fourcc_body)
    assert entry.codec == codec
    if entry.kind == "audio":
        assert (entry.channels, entry.sample_rate) == (2, 48000)


# AudioSpecificConfig bits: audioObjectType(5) samplingFrequencyIndex(4) [frequency(24)] channelConfiguration(4)
CHANNELS = [
    ("mono", bytes([0x12, 0x08]), 1),  # 00010 0100 0001 000: what ffmpeg writes under a template channelcount of 2
    ("stereo", bytes([0x12, 0x10]), 2),
    ("5.1", bytes([0x12, 0x30]), 6),
    ("7.1", bytes([0x12, 0x38]), 8),
    ("explicit-frequency-mono", bytes([0x17, 0x80, 0x5D, 0xC0, 0x08]), 1),  # index 15, then 24 bits of 48000
    ("program-config-element", bytes([0x12, 0x00]), 2),  # 0: the count is elsewhere; the sample entry's stands
]


@pytest.mark.parametrize("asc,channels", [(c[1], c[2]) for c in CHANNELS], ids=[c[0] for c in CHANNELS])
def test_aac_channels_come_from_the_decoder_config(asc, channels):
    entry = parse_sample_entry(*_audio("mp4a", box("esds", _esds(asc=asc))))
    assert entry.codec == "mp4a.40.2" and entry.channels == channels


def test_missing_config_box():
    kind, body = _visual("avc1", "free", b"")
    with pytest.raises(MediaError, match="lacks its avcC"):
        parse_sample_entry(kind, body)


def test_real_encode_matches_sidx_and_ffprobe(world):
    folder = world.work_dir()
    for path in sorted(folder.glob("*.mp4")):
        lay = layout_of(path)
        assert lay.index is not None and len(lay.fragments) == 3
        kinds = [b.type for b in read_boxes(path)]
        assert kinds[:3] == ["ftyp", "moov", "sidx"] and kinds.count("moof") == 3
