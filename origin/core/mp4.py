"""The layout of a single-file fragmented MP4 rendition, from its boxes (ISO/IEC 14496-12).

A rendition is one track in one file: `ftyp moov [sidx] (moof mdat)+ [mfra]`. Players address it by
byte ranges, so the origin records: the init range (ftyp..moov, HLS EXT-X-MAP and DASH Initialization),
the sidx range (DASH SegmentBase indexRange) and each fragment's (offset, length, duration). The shell
walks the top-level boxes reading only headers, and the payloads of moov, sidx and moof (a few KB each;
mdat is never read); `analyze` turns that into a `Layout` or raises MediaError saying what is wrong.
Durations come from the fragments' trun/tfhd/trex sample durations; an sidx must agree with them.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator, Sequence

from origin.core.codecs import SampleEntry, parse_sample_entry
from origin.core.errors import MediaError

NEEDS_PAYLOAD = frozenset({"moov", "sidx", "moof"})
HEADER_BYTES = 16  # enough for a 64-bit largesize header
MAX_PAYLOAD_BYTES = 64 << 20  # a moov/moof bigger than this is not a rendition we made or take
_SEGMENT_PREFIX = frozenset({"styp", "prft", "emsg"})  # boxes that belong to the fragment after them
_NON_SYNC = 0x00010000  # sample_is_non_sync_sample in sample_flags


@dataclass(frozen=True)
class TopBox:
    type: str
    offset: int
    size: int
    payload: bytes | None = None  # the body (after the header) for NEEDS_PAYLOAD types


@dataclass(frozen=True)
class ByteRange:
    offset: int
    length: int

    @property
    def end(self) -> int:  # exclusive
        return self.offset + self.length


@dataclass(frozen=True)
class Fragment:
    offset: int
    length: int
    duration: int  # in the track's timescale
    samples: int
    starts_with_sync: bool


@dataclass(frozen=True)
class Layout:
    track_id: int
    timescale: int
    language: str
    entry: SampleEntry
    init: ByteRange
    index: ByteRange | None
    fragments: tuple[Fragment, ...]

    @property
    def kind(self) -> str:
        return self.entry.kind

    @property
    def duration_s(self) -> float:
        return sum(f.duration for f in self.fragments) / self.timescale

    @property
    def frame_rate(self) -> float | None:
        if self.kind != "video" or not self.fragments:
            return None
        ticks = sum(f.duration for f in self.fragments)
        return round(sum(f.samples for f in self.fragments) * self.timescale / ticks, 3) if ticks else None


def parse_header(data: bytes, offset: int, file_size: int) -> tuple[str, int, int]:
    """(type, size, header length) of the box at `offset`, from up to HEADER_BYTES read there."""
    if len(data) < 8:
        raise MediaError(f"truncated box header at byte {offset}")
    size, raw_type = struct.unpack_from(">I4s", data)
    header = 8
    if size == 1:
        if len(data) < 16:
            raise MediaError(f"truncated largesize header at byte {offset}")
        (size,) = struct.unpack_from(">Q", data, 8)
        header = 16
    elif size == 0:
        size = file_size - offset
    if size < header or offset + size > file_size:
        raise MediaError(f"box at byte {offset} claims {size} bytes; the file has {file_size - offset} left")
    return raw_type.decode("latin-1"), size, header


def analyze(boxes: Sequence[TopBox], file_size: int) -> Layout:
    """The rendition layout of a file whose top-level boxes are `boxes` (in file order)."""
    types = [b.type for b in boxes]
    if "moov" not in types:
        raise MediaError("no moov box: not an MP4 file")
    if "moof" not in types:
        raise MediaError("no moof box: not a fragmented MP4 (remux with -movflags "
                         "frag_keyframe+empty_moov+default_base_moof)")
    moov = boxes[types.index("moov")]
    track = _parse_moov(_payload(moov))
    init = ByteRange(0, moov.offset + moov.size)
    fragments = tuple(_fragments(boxes, track))
    index = None
    if "sidx" in types:
        sidx = boxes[types.index("sidx")]
        index = ByteRange(sidx.offset, sidx.size)
        _check_sidx(_payload(sidx), sidx.offset + sidx.size, fragments, track.timescale)
    if track.entry.kind == "video" and not all(f.starts_with_sync for f in fragments):
        bad = next(i for i, f in enumerate(fragments) if not f.starts_with_sync)
        raise MediaError(f"fragment {bad} does not start with a keyframe: segments must be independent")
    return Layout(track.track_id, track.timescale, track.language, track.entry, init, index, fragments)


@dataclass(frozen=True)
class _Track:
    track_id: int
    timescale: int
    language: str
    entry: SampleEntry
    default_duration: int
    default_flags: int


def _payload(box: TopBox) -> bytes:
    if box.payload is None:
        raise MediaError(f"{box.type} box at byte {box.offset} was not read")
    return box.payload


def children(data: bytes) -> Iterator[tuple[str, bytes]]:
    """(type, body) of each box packed in `data`."""
    pos = 0
    while pos + 8 <= len(data):
        size, raw_type = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > len(data):
                raise MediaError("truncated largesize child box")
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = len(data) - pos
        if size < header or pos + size > len(data):
            raise MediaError(f"child box {raw_type.decode('latin-1')!r} overruns its parent")
        yield raw_type.decode("latin-1"), data[pos + header:pos + size]
        pos += size


def find(data: bytes, path: str) -> bytes | None:
    """The body of the first box at `path` ("trak/mdia/mdhd") inside `data`, or None."""
    head, _, rest = path.partition("/")
    for box_type, body in children(data):
        if box_type == head:
            return body if not rest else find(body, rest)
    return None


def _parse_moov(moov: bytes) -> _Track:
    traks = [body for box_type, body in children(moov) if box_type == "trak"]
    if len(traks) != 1:
        raise MediaError(f"the file has {len(traks)} tracks: a rendition file holds exactly one")
    trak = traks[0]
    tkhd, mdhd = find(trak, "tkhd"), find(trak, "mdia/mdhd")
    stsd = find(trak, "mdia/minf/stbl/stsd")
    if tkhd is None or mdhd is None or stsd is None:
        raise MediaError("track lacks tkhd, mdhd or stsd")
    track_id = struct.unpack_from(">I", tkhd, 20 if tkhd[0] == 1 else 12)[0]
    timescale, language = _parse_mdhd(mdhd)
    entries = list(children(stsd[8:]))
    if len(entries) != 1:
        raise MediaError(f"track has {len(entries)} sample descriptions: expected one")
    entry = parse_sample_entry(*entries[0])
    default_duration, default_flags = 0, 0
    mvex = find(moov, "mvex")
    for box_type, body in children(mvex or b""):
        if box_type == "trex" and len(body) >= 24 and struct.unpack_from(">I", body, 4)[0] == track_id:
            default_duration = struct.unpack_from(">I", body, 12)[0]
            default_flags = struct.unpack_from(">I", body, 20)[0]
    return _Track(track_id, timescale, language, entry, default_duration, default_flags)


def _parse_mdhd(mdhd: bytes) -> tuple[int, str]:
    version = mdhd[0]
    pos = 4 + (16 if version == 1 else 8)
    if len(mdhd) < pos + 4 + (8 if version == 1 else 4) + 2:
        raise MediaError("truncated mdhd")
    timescale = struct.unpack_from(">I", mdhd, pos)[0]
    if timescale == 0:
        raise MediaError("mdhd timescale is 0")
    packed = struct.unpack_from(">H", mdhd, pos + 4 + (8 if version == 1 else 4))[0]
    letters = "".join(chr(((packed >> shift) & 0x1F) + 0x60) for shift in (10, 5, 0))
    return timescale, letters if letters.isalpha() and letters.islower() else "und"


def _fragments(boxes: Sequence[TopBox], track: _Track) -> Iterator[Fragment]:
    start: int | None = None
    pending: tuple[int, int, bool] | None = None  # (duration, samples, sync) of the moof awaiting mdat
    for box in boxes:
        if box.type in _SEGMENT_PREFIX:
            start = box.offset if start is None else start
        elif box.type == "moof":
            if pending is not None:
                raise MediaError(f"moof at byte {box.offset} follows a moof without mdat")
            start = box.offset if start is None else start
            pending = _parse_moof(_payload(box), track)
        elif box.type == "mdat" and pending is not None and start is not None:
            yield Fragment(start, box.offset + box.size - start, *pending)
            start, pending = None, None
        elif pending is None:
            start = None  # a styp not followed by a moof does not start a fragment
    if pending is not None:
        raise MediaError("the last moof has no mdat: the file is truncated")


def _parse_moof(moof: bytes, track: _Track) -> tuple[int, int, bool]:
    trafs = [body for box_type, body in children(moof) if box_type == "traf"]
    if len(trafs) != 1:
        raise MediaError(f"a moof has {len(trafs)} track fragments: expected one")
    tfhd = find(trafs[0], "tfhd")
    if tfhd is None or len(tfhd) < 8:
        raise MediaError("traf without tfhd")
    flags = int.from_bytes(tfhd[1:4], "big")
    if struct.unpack_from(">I", tfhd, 4)[0] != track.track_id:
        raise MediaError("a fragment belongs to another track than the moov's")
    pos = 8 + (8 if flags & 0x01 else 0) + (4 if flags & 0x02 else 0)
    default_duration, default_flags = track.default_duration, track.default_flags
    if flags & 0x08:
        default_duration = struct.unpack_from(">I", tfhd, pos)[0]
        pos += 4
    pos += 4 if flags & 0x10 else 0
    if flags & 0x20:
        default_flags = struct.unpack_from(">I", tfhd, pos)[0]
    duration, samples, sync = 0, 0, None
    for box_type, body in children(trafs[0]):
        if box_type == "trun":
            d, n, first_sync = _parse_trun(body, default_duration, default_flags)
            duration, samples = duration + d, samples + n
            sync = first_sync if sync is None else sync
    if samples == 0:
        raise MediaError("a fragment has no samples")
    return duration, samples, bool(sync)


def _parse_trun(trun: bytes, default_duration: int, default_flags: int) -> tuple[int, int, bool]:
    flags = int.from_bytes(trun[1:4], "big")
    count = struct.unpack_from(">I", trun, 4)[0]
    pos = 8 + (4 if flags & 0x01 else 0)
    first_flags = None
    if flags & 0x04:
        first_flags = struct.unpack_from(">I", trun, pos)[0]
        pos += 4
    fields = [(bit, name) for bit, name in ((0x100, "d"), (0x200, "s"), (0x400, "f"), (0x800, "c")) if flags & bit]
    if pos + count * 4 * len(fields) > len(trun):
        raise MediaError("trun is shorter than its sample count")
    total = 0
    for i in range(count):
        values = struct.unpack_from(f">{len(fields)}I", trun, pos + i * 4 * len(fields)) if fields else ()
        named = {name: v for (_, name), v in zip(fields, values, strict=True)}
        total += named.get("d", default_duration)
        if i == 0 and first_flags is None:
            first_flags = named.get("f", default_flags)
    return total, count, count > 0 and not (first_flags or 0) & _NON_SYNC


def _check_sidx(sidx: bytes, anchor: int, fragments: Sequence[Fragment], timescale: int) -> None:
    version = sidx[0]
    sidx_timescale = struct.unpack_from(">I", sidx, 8)[0]
    pos = 12 + (16 if version == 1 else 8)
    first_offset = struct.unpack_from(">Q" if version == 1 else ">I", sidx, pos - 8 if version == 1 else pos - 4)[0]
    count = struct.unpack_from(">H", sidx, pos + 2)[0]
    pos += 4
    if count != len(fragments) or len(sidx) < pos + 12 * count:
        raise MediaError(f"sidx lists {count} subsegments; the file has {len(fragments)} fragments")
    offset = anchor + first_offset
    for i, fragment in enumerate(fragments):
        size_word, duration = struct.unpack_from(">II", sidx, pos + 12 * i)
        size = size_word & 0x7FFFFFFF
        if size_word >> 31 or offset != fragment.offset or size != fragment.length:
            raise MediaError(f"sidx subsegment {i} ({offset}+{size}) does not match fragment "
                             f"{fragment.offset}+{fragment.length}")
        if duration * timescale != fragment.duration * sidx_timescale:
            raise MediaError(f"sidx subsegment {i} duration disagrees with its fragment")
        offset += size
