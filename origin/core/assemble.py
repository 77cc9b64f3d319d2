"""From analysed files to a catalog entry and its manifests: the last pure step of an ingest.

`assemble` takes each rendition file's layout, size and hash, derives the content version and the
keys, computes bandwidths (HLS BANDWIDTH is the peak segment bit rate, AVERAGE-BANDWIDTH the mean) and
renders the relative HLS and DASH manifests that are stored beside the files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping

import xxhash

from contracts.catalog import Asset, Metadata, Rendition, Segment, Span, TitleEntry
from origin.core import layout as keys
from origin.core import playlists
from origin.core.errors import MediaError
from origin.core.mp4 import Layout

CONTENT_TYPES = {".mp4": "video/mp4", ".m3u8": "application/vnd.apple.mpegurl", ".mpd": "application/dash+xml",
                 ".jpg": "image/jpeg", ".json": "application/json"}


def content_type(key: str) -> str:
    dot = key.rfind(".")
    return CONTENT_TYPES.get(key[dot:] if dot >= 0 else "", "application/octet-stream")


@dataclass(frozen=True)
class MediaFile:
    name: str  # file stem: "720p", "audio-0-en"
    size: int
    xxh3: str
    layout: Layout
    language: str | None = None  # overrides the file's mdhd language


@dataclass(frozen=True)
class Blob:
    key: str
    data: bytes
    content_type: str
    xxh3: str


def version_for(media: list[MediaFile], poster_xxh3: str | None) -> str:
    pairs = [(f"{m.name}.mp4", m.xxh3) for m in media]
    if poster_xxh3 is not None:
        pairs.append((keys.POSTER, poster_xxh3))
    return keys.version_of(pairs)


def rendition(title_id: str, version: str, m: MediaFile) -> Rendition:
    lay = m.layout
    if lay.init.end > m.size or any(f.offset + f.length > m.size for f in lay.fragments):
        raise MediaError(f"{m.name}: byte ranges run past the end of the file")
    # microsecond precision, as stored: an entry read back compares equal to the one written
    segments = tuple(Segment(f.offset, f.length, round(f.duration / lay.timescale, 6)) for f in lay.fragments)
    total_s = sum(s.duration_s for s in segments)
    if total_s <= 0:
        raise MediaError(f"{m.name}: zero duration")
    average = math.ceil(sum(s.length for s in segments) * 8 / total_s)
    peak = max(peak_bit_rate(segments), average)
    entry = lay.entry
    video = entry.kind == "video"
    return Rendition(
        name=m.name, kind=entry.kind, key=keys.file_key(title_id, version, f"{m.name}.mp4"), size=m.size,
        xxh3=m.xxh3, codec=entry.codec, bandwidth=peak, average_bandwidth=average,
        init=Span(lay.init.offset, lay.init.length),
        index=Span(lay.index.offset, lay.index.length) if lay.index else None,
        segments=segments, playlist=keys.file_key(title_id, version, f"{m.name}.m3u8"),
        width=entry.width if video else None, height=entry.height if video else None,
        frame_rate=lay.frame_rate if video else None,
        language=None if video else (m.language or lay.language),
        channels=entry.channels, sample_rate=entry.sample_rate,
    )


def peak_bit_rate(segments: tuple[Segment, ...]) -> int:
    """RFC 8216bis §4.1: the largest bit rate of any contiguous run of segments lasting 0.5 to 1.5
    target durations; so a short tail segment (one keyframe in a few ms) does not read as a spike."""
    target = max(1, max(math.floor(s.duration_s + 0.5) for s in segments))
    best = 0
    for i in range(len(segments)):
        size = duration = 0.0
        for seg in segments[i:]:
            size, duration = size + seg.length, duration + seg.duration_s
            if duration > 1.5 * target:
                break
            if duration >= 0.5 * target:
                best = max(best, math.ceil(size * 8 / duration))
    return best


def _blob(key: str, text: str) -> Blob:
    data = text.encode()
    return Blob(key, data, content_type(key), xxhash.xxh3_128_hexdigest(data))


def assemble(meta: Metadata, media: list[MediaFile], poster: tuple[int, str] | None,
             source: Mapping[str, Any], ingested_at: str) -> tuple[TitleEntry, list[Blob]]:
    """The entry and the manifests to store; `poster` is (size, xxh3) of poster.jpg when there is one."""
    if not any(m.layout.kind == "video" for m in media):
        raise MediaError("no video rendition")
    version = version_for(media, poster[1] if poster else None)
    tid = meta.title_id
    order = {"video": 0, "audio": 1}
    renditions = tuple(sorted((rendition(tid, version, m) for m in media),
                              key=lambda r: (order[r.kind], r.codec.split(".")[0] != "avc1", r.bandwidth, r.name)))
    if not meta.languages:
        meta = replace(meta, languages=tuple(dict.fromkeys(
            r.language for r in renditions if r.language and r.language != "und")))
    duration = max(r.duration_s for r in renditions if r.kind == "video")
    master, dash = keys.file_key(tid, version, keys.MASTER), keys.file_key(tid, version, keys.DASH)
    poster_key = keys.file_key(tid, version, keys.POSTER) if poster else None
    entry = TitleEntry(meta=meta, version=version, duration_s=duration, renditions=renditions, assets=(),
                       master=master, dash=dash, poster=poster_key, source=dict(source), ingested_at=ingested_at)
    blobs = [_blob(r.playlist, playlists.media_playlist(r)) for r in renditions]
    blobs += [_blob(master, playlists.master_playlist(entry)), _blob(dash, playlists.mpd(entry))]
    assets = [Asset(b.key, len(b.data), b.xxh3, b.content_type) for b in blobs]
    if poster is not None and poster_key is not None:
        assets.append(Asset(poster_key, poster[0], poster[1], "image/jpeg"))
    return replace(entry, assets=tuple(assets)), blobs
