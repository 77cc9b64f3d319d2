"""RFC 6381 codec strings from an MP4 sample entry, as HLS CODECS and DASH @codecs want them.

Read from the configuration boxes the encoder wrote (avcC, hvcC, av1C, vpcC, esds), not from names,
so a player learns the real profile and level: `avc1.64001f`, `hvc1.1.6.L93.B0`, `av01.0.04M.08`,
`mp4a.40.2`. Formats: RFC 6381 §3.3 (avc), ISO/IEC 14496-15 Annex E (hvc), AV1-ISOBMFF §5 (av01),
VP9-ISOBMFF (vp09).

Audio channels likewise come from the decoder's configuration when it says: an AAC track's
AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1, `channelConfiguration`). The sample entry's own
`channelcount` is a template field ("= 2" in ISO/IEC 14496-12 §12.2.3) that ffmpeg writes as 2 for a
mono AAC track, so a mono title was declared CHANNELS="2"; it is only the fallback.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from origin.core.errors import MediaError

_VISUAL = frozenset({"avc1", "avc3", "hvc1", "hev1", "av01", "vp09"})
_AUDIO = frozenset({"mp4a", "ac-3", "ec-3", "Opus", "fLaC"})
_VISUAL_HEADER = 78  # SampleEntry(8) + VisualSampleEntry fields(70)
_AUDIO_HEADER = 28  # SampleEntry(8) + AudioSampleEntry v0 fields(20)


@dataclass(frozen=True)
class SampleEntry:
    kind: str  # "video" | "audio"
    fourcc: str
    codec: str  # RFC 6381
    width: int | None = None
    height: int | None = None
    channels: int | None = None
    sample_rate: int | None = None


def parse_sample_entry(fourcc: str, body: bytes) -> SampleEntry:
    from origin.core.mp4 import children  # the box walker lives with the layout code

    if fourcc in _VISUAL:
        if len(body) < _VISUAL_HEADER:
            raise MediaError(f"truncated {fourcc} sample entry")
        width, height = struct.unpack_from(">HH", body, 24)
        boxes = dict(children(body[_VISUAL_HEADER:]))
        return SampleEntry("video", fourcc, _video_codec(fourcc, boxes), width=width, height=height)
    if fourcc in _AUDIO:
        if len(body) < _AUDIO_HEADER:
            raise MediaError(f"truncated {fourcc} sample entry")
        version = struct.unpack_from(">H", body, 8)[0]
        channels = struct.unpack_from(">H", body, 16)[0]
        rate = struct.unpack_from(">I", body, 24)[0] >> 16
        skip = {0: 0, 1: 16, 2: 36}.get(version, 0)
        boxes = dict(children(body[_AUDIO_HEADER + skip:]))
        codec, configured = _audio_codec(fourcc, boxes)
        return SampleEntry("audio", fourcc, codec, channels=configured or channels, sample_rate=rate)
    raise MediaError(f"unsupported sample entry {fourcc!r} (encrypted or not a codec the origin takes)")


def _video_codec(fourcc: str, boxes: dict[str, bytes]) -> str:
    config_box = {"avc1": "avcC", "avc3": "avcC", "hvc1": "hvcC", "hev1": "hvcC", "av01": "av1C",
                  "vp09": "vpcC"}[fourcc]
    config = boxes.get(config_box)
    if config is None:
        raise MediaError(f"{fourcc} sample entry lacks its {config_box} box")
    try:
        if config_box == "avcC":
            return f"{fourcc}.{config[1]:02x}{config[2]:02x}{config[3]:02x}"
        if config_box == "hvcC":
            return _hevc(fourcc, config)
        if config_box == "av1C":
            return _av1(config)
        return _vp9(config)
    except (IndexError, struct.error):
        raise MediaError(f"truncated {config_box} box") from None


def _hevc(fourcc: str, c: bytes) -> str:
    space = ("", "A", "B", "C")[c[1] >> 6]
    tier = "H" if c[1] & 0x20 else "L"
    profile = c[1] & 0x1F
    compat = struct.unpack_from(">I", c, 2)[0]
    reversed_compat = int(f"{compat:032b}"[::-1], 2)
    constraints = list(c[6:12])
    while constraints and constraints[-1] == 0:
        constraints.pop()
    parts = [fourcc, f"{space}{profile}", f"{reversed_compat:X}", f"{tier}{c[12]}"]
    parts += [f"{b:X}" for b in constraints]
    return ".".join(parts)


def _av1(c: bytes) -> str:
    profile, level = c[1] >> 5, c[1] & 0x1F
    tier = "H" if c[2] & 0x80 else "M"
    high_bitdepth, twelve_bit = bool(c[2] & 0x40), bool(c[2] & 0x20)
    depth = 12 if twelve_bit else 10 if high_bitdepth else 8
    return f"av01.{profile}.{level:02d}{tier}.{depth:02d}"


def _vp9(c: bytes) -> str:
    profile, level, depth = c[4], c[5], c[6] >> 4
    return f"vp09.{profile:02d}.{level:02d}.{depth:02d}"


def _audio_codec(fourcc: str, boxes: dict[str, bytes]) -> tuple[str, int | None]:
    """The RFC 6381 codec and, when the decoder configuration says, the channel count."""
    if fourcc != "mp4a":
        return {"ac-3": "ac-3", "ec-3": "ec-3", "Opus": "opus", "fLaC": "fLaC"}[fourcc], None
    esds = boxes.get("esds")
    if esds is None:
        raise MediaError("mp4a sample entry lacks its esds box")
    try:
        return _mp4a(esds[4:])
    except (IndexError, struct.error):
        raise MediaError("truncated esds box") from None


def _descriptor(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, body start, body length) of the MPEG-4 descriptor at `pos` (14496-1 §8.3.3)."""
    tag, pos, length = data[pos], pos + 1, 0
    for _ in range(4):
        byte = data[pos]
        pos += 1
        length = (length << 7) | (byte & 0x7F)
        if not byte & 0x80:
            break
    return tag, pos, length


# channelConfiguration (ISO/IEC 14496-3 Table 1.19) -> channels; 0 means "in a program config element"
_AAC_CHANNELS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8, 11: 7, 12: 8, 13: 24, 14: 8}


def _mp4a(data: bytes) -> tuple[str, int | None]:
    tag, pos, _ = _descriptor(data, 0)
    if tag != 0x03:
        raise MediaError("esds does not start with an ES_Descriptor")
    flags = data[pos + 2]
    pos += 3 + (2 if flags & 0x80 else 0) + (1 + data[pos + 3] if flags & 0x40 else 0) + (2 if flags & 0x20 else 0)
    tag, pos, length = _descriptor(data, pos)
    if tag != 0x04:
        raise MediaError("esds lacks a DecoderConfigDescriptor")
    object_type = data[pos]
    end, pos = pos + length, pos + 13
    if object_type != 0x40 or pos >= end:
        return f"mp4a.{object_type:02x}", None
    tag, pos, length = _descriptor(data, pos)
    if tag != 0x05:
        return "mp4a.40", None
    config = _Bits(data[pos:pos + length])
    audio_object_type = config.read(5)
    if audio_object_type == 31:
        audio_object_type = 32 + config.read(6)
    if config.read(4) == 0xF:  # samplingFrequencyIndex: an explicit 24-bit frequency follows
        config.read(24)
    return f"mp4a.40.{audio_object_type}", _AAC_CHANNELS.get(config.read(4))


class _Bits:
    """An MSB-first bit reader over a descriptor's body (IndexError past its end)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]
            value = (value << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value
