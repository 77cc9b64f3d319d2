"""HLS (RFC 8216) and DASH (ISO/IEC 23009-1) manifests rendered from a catalog entry.

Every segment is a byte range of its rendition's single file: HLS media playlists use EXT-X-MAP with
a BYTERANGE for the init section and EXT-X-BYTERANGE per segment; the MPD uses SegmentBase with the
sidx as indexRange (a SegmentList of mediaRanges when a file has no sidx). Audio is its own rendition,
an EXT-X-MEDIA group in HLS and an AdaptationSet in DASH. URIs come from callables: the origin writes
relative names next to the files; playback passes functions that return signed appliance URLs.
"""
from __future__ import annotations

import math
from typing import Callable
from xml.sax.saxutils import quoteattr

from contracts.catalog import Rendition, TitleEntry

UriFor = Callable[[Rendition], str]
HLS_VERSION = 7  # EXT-X-MAP in a non-I-frame playlist needs 6; 7 for fMP4 is what players expect
AUDIO_GROUP = "audio"


def basename(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def relative_media(r: Rendition) -> str:
    return basename(r.key)


def relative_playlist(r: Rendition) -> str:
    return basename(r.playlist)


def _seconds(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") if value else "0"


def target_duration(r: Rendition) -> int:
    """EXT-X-TARGETDURATION: each EXTINF rounded to the nearest integer must not exceed it (§4.3.3.1)."""
    return max(1, max((math.floor(s.duration_s + 0.5) for s in r.segments), default=1))


def media_playlist(r: Rendition, uri: str | None = None) -> str:
    uri = uri if uri is not None else relative_media(r)
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{HLS_VERSION}", f"#EXT-X-TARGETDURATION:{target_duration(r)}",
             "#EXT-X-PLAYLIST-TYPE:VOD", "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-INDEPENDENT-SEGMENTS",
             f'#EXT-X-MAP:URI="{uri}",BYTERANGE="{r.init.length}@{r.init.offset}"']
    for seg in r.segments:
        lines += [f"#EXTINF:{_seconds(seg.duration_s)},", f"#EXT-X-BYTERANGE:{seg.length}@{seg.offset}", uri]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def master_playlist(entry: TitleEntry, playlist_uri: UriFor = relative_playlist) -> str:
    """The multivariant playlist: every video rendition, with the audio renditions as one group."""
    audio = entry.audio
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{HLS_VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for i, a in enumerate(audio):
        name = a.language or a.name
        lines.append(
            f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="{AUDIO_GROUP}",NAME="{name}-{i}",LANGUAGE="{a.language}",'
            f'DEFAULT={"YES" if i == 0 else "NO"},AUTOSELECT=YES,CHANNELS="{a.channels or 2}",'
            f'URI="{playlist_uri(a)}"')
    audio_peak = max((a.bandwidth for a in audio), default=0)
    audio_average = max((a.average_bandwidth for a in audio), default=0)
    audio_codec = audio[0].codec if audio else None
    # H.264 first (the variant a player starts with should be one every player decodes), then by bandwidth
    for v in sorted(entry.video, key=lambda r: (_codec_family(r) != "avc1", r.bandwidth, r.name)):
        codecs = v.codec + (f",{audio_codec}" if audio_codec else "")
        attrs = [f"BANDWIDTH={v.bandwidth + audio_peak}", f"AVERAGE-BANDWIDTH={v.average_bandwidth + audio_average}",
                 f'CODECS="{codecs}"', f"RESOLUTION={v.width}x{v.height}"]
        if v.frame_rate:
            attrs.append(f"FRAME-RATE={v.frame_rate:.3f}")
        if audio:
            attrs.append(f'AUDIO="{AUDIO_GROUP}"')
        lines += ["#EXT-X-STREAM-INF:" + ",".join(attrs), playlist_uri(v)]
    return "\n".join(lines) + "\n"


def _duration_iso(seconds: float) -> str:
    return f"PT{seconds:.3f}S"


def _codec_family(r: Rendition) -> str:
    return r.codec.split(".", 1)[0]


def mpd(entry: TitleEntry, media_uri: UriFor = relative_media) -> str:
    """A static on-demand MPD: one AdaptationSet per video codec family and per audio language."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
           'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011" '
           f'mediaPresentationDuration="{_duration_iso(entry.duration_s)}" minBufferTime="PT2.000S">',
           f'  <Period id="0" start="PT0S" duration="{_duration_iso(entry.duration_s)}">']
    families: dict[str, list[Rendition]] = {}
    for v in sorted(entry.video, key=lambda r: r.bandwidth):
        families.setdefault(_codec_family(v), []).append(v)
    set_id = 0
    for family in sorted(families):
        reps = families[family]
        out.append(f'    <AdaptationSet id="{set_id}" contentType="video" mimeType="video/mp4" '
                   f'segmentAlignment="true" startWithSAP="1" maxWidth="{max(r.width or 0 for r in reps)}" '
                   f'maxHeight="{max(r.height or 0 for r in reps)}">')
        for r in reps:
            rate = f' frameRate="{_frame_rate(r.frame_rate)}"' if r.frame_rate else ""
            out.append(f'      <Representation id={quoteattr(r.name)} codecs="{r.codec}" bandwidth="{r.bandwidth}" '
                       f'width="{r.width}" height="{r.height}"{rate} sar="1:1">')
            out += _segment_info(r, media_uri) + ["      </Representation>"]
        out.append("    </AdaptationSet>")
        set_id += 1
    for a in entry.audio:
        out.append(f'    <AdaptationSet id="{set_id}" contentType="audio" mimeType="audio/mp4" '
                   f'lang={quoteattr(a.language or "und")} segmentAlignment="true" startWithSAP="1">')
        out.append(f'      <Representation id={quoteattr(a.name)} codecs="{a.codec}" bandwidth="{a.bandwidth}" '
                   f'audioSamplingRate="{a.sample_rate or 48000}">')
        out.append('        <AudioChannelConfiguration schemeIdUri="urn:mpeg:dash:23003:3:audio_channel_'
                   f'configuration:2011" value="{a.channels or 2}"/>')
        out += _segment_info(a, media_uri) + ["      </Representation>", "    </AdaptationSet>"]
        set_id += 1
    out += ["  </Period>", "</MPD>"]
    return "\n".join(out) + "\n"


def _frame_rate(rate: float) -> str:
    for den in (1, 1001):
        num = rate * den
        if abs(num - round(num)) < 0.01 * den:
            return str(round(num)) if den == 1 else f"{round(num)}/{den}"
    return f"{round(rate * 1000)}/1000"


def _segment_info(r: Rendition, media_uri: UriFor) -> list[str]:
    lines = [f"        <BaseURL>{_xml_text(media_uri(r))}</BaseURL>"]
    init = f'<Initialization range="{r.init.offset}-{r.init.last}"/>'
    if r.index is not None:
        lines.append(f'        <SegmentBase indexRange="{r.index.offset}-{r.index.last}" indexRangeExact="true">'
                     f"{init}</SegmentBase>")
        return lines
    # no sidx: list every segment's range with a timeline of their durations (milliseconds)
    lines.append(f'        <SegmentList timescale="1000">{init}')
    lines.append("          <SegmentTimeline>")
    runs: list[list[int]] = []
    for seg in r.segments:
        ms = round(seg.duration_s * 1000)
        if runs and runs[-1][0] == ms:
            runs[-1][1] += 1
        else:
            runs.append([ms, 0])
    lines += [f'            <S d="{ms}"' + (f' r="{repeat}"' if repeat else "") + "/>" for ms, repeat in runs]
    lines.append("          </SegmentTimeline>")
    lines += [f'          <SegmentURL mediaRange="{s.offset}-{s.offset + s.length - 1}"/>' for s in r.segments]
    lines.append("        </SegmentList>")
    return lines


def _xml_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
