"""Player manifests for one play: HLS multivariant + media playlists and a DASH MPD whose URLs point at
the appliances steering chose for this client, with one *pathway* per appliance.

Strategy. Steering answers every rendition file with its ranked, signed appliance URLs. We regroup them
by appliance: pathway "oca-1" holds each file's URL on oca-1. The HLS master repeats every variant once
per pathway (`PATHWAY-ID`, with an audio group per pathway): a player with Content Steering follows the
steering manifest; one without treats the copies as redundant variants and fails over. Media playlists
are rendered by playback too (`<rendition>.m3u8?loc=<signed URL>`), stateless: the signed appliance URL
rides in the query and is checked against the rendition's key and the fleet's appliances. The MPD lists
one BaseURL per pathway (`serviceLocation`) and a DASH-IF `<ContentSteering>` element.
The origin's pure renderers (origin.core.playlists) do the per-rendition work.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence
from urllib.parse import parse_qs, quote, urlsplit

from origin.core import playlists
from origin.core.catalog import Rendition, TitleEntry

SIGNED_PARAMS = ("e", "k", "c", "s")
_PATHWAY_CHARS = re.compile(r"[^A-Za-z0-9._-]")


class PlaybackError(ValueError):
    status_hint = 400
    reason = "bad-request"


class NoLocations(PlaybackError):
    """Steering answered, but some file has no appliance (nothing healthy holds it)."""
    status_hint = 503
    reason = "no-locations"


class BadLocation(PlaybackError):
    status_hint = 400
    reason = "bad-location"


@dataclass(frozen=True)
class Pathway:
    id: str
    urls: Mapping[str, str]  # file key -> signed URL on this pathway's appliance


def base_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def pathway_id(name: str) -> str:
    return _PATHWAY_CHARS.sub("_", name)[:64] or "p"


def build_pathways(entry: TitleEntry, locations: Mapping[str, Sequence[str]], name_of: Callable[[str], str],
                   max_pathways: int = 4, holds: Mapping[str, Sequence[bool]] | None = None) -> tuple[Pathway, ...]:
    """Group every file's ranked URLs by appliance (`name_of(base URL)`), best-ranked appliance first.
    Fill places files one by one, so an appliance may hold only some of a title: where steering says
    (`holds`, a flag per location) that a pathway's appliance lacks a file, that pathway takes the
    file's best holder instead, so no pathway leads a player to a 404. A pathway needs every audio
    rendition and at least one video rendition; raises NoLocations when a file has no URL at all or
    no pathway is complete."""
    missing = [r.key for r in entry.renditions if not locations.get(r.key)]
    if missing:
        raise NoLocations(f"no appliance serves {missing[0]}")
    score: dict[str, float] = {}
    urls: dict[str, dict[str, str]] = {}
    best: dict[str, str] = {}  # file -> URL on its best-ranked holder
    for r in entry.renditions:
        flags = list((holds or {}).get(r.key) or [])
        held = [u for u, h in zip(locations[r.key], flags) if h]
        best[r.key] = held[0] if held else locations[r.key][0]
        for rank, url in enumerate(locations[r.key]):
            pid = pathway_id(name_of(base_of(url)))
            lacks = rank < len(flags) and not flags[rank]
            urls.setdefault(pid, {})[r.key] = best[r.key] if lacks else url
            score[pid] = score.get(pid, 0.0) + rank
    n = len(entry.renditions)
    out = []
    for pid in sorted(urls, key=lambda p: (score[p] + 100 * (n - len(urls[p])), p)):
        held = urls[pid]
        if all(a.key in held for a in entry.audio) and any(v.key in held for v in entry.video):
            out.append(Pathway(pid, held))
    if not out:
        raise NoLocations("no appliance holds a playable set of renditions")
    return tuple(out[:max_pathways])


def _media_uri(r: Rendition, url: str) -> str:
    return f"{quote(r.name, safe='')}.m3u8?loc={quote(url, safe='')}"


def hls_master(entry: TitleEntry, pathways: Sequence[Pathway], steering_uri: str | None) -> str:
    """Every variant per pathway; the origin's renderer does one pathway, we relabel its groups."""
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{playlists.HLS_VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if steering_uri:
        lines.append(f'#EXT-X-CONTENT-STEERING:SERVER-URI="{steering_uri}",PATHWAY-ID="{pathways[0].id}"')
    for i, p in enumerate(pathways):
        held = [r for r in entry.renditions if r.key in p.urls]
        sub = TitleEntry(meta=entry.meta, version=entry.version, duration_s=entry.duration_s,
                         renditions=tuple(held), assets=(), master="", dash="", poster=None)
        text = playlists.master_playlist(sub, lambda r, p=p: _media_uri(r, p.urls[r.key]))
        group = f"{playlists.AUDIO_GROUP}-{i}"
        for line in text.splitlines()[3:]:
            line = line.replace(f'GROUP-ID="{playlists.AUDIO_GROUP}"', f'GROUP-ID="{group}"')
            if line.startswith("#EXT-X-STREAM-INF:"):
                line = line.replace(f'AUDIO="{playlists.AUDIO_GROUP}"', f'AUDIO="{group}"')
                line += f',PATHWAY-ID="{p.id}"'
            lines.append(line)
    return "\n".join(lines) + "\n"


def check_location(r: Rendition, loc: str, known_bases: Sequence[str]) -> str:
    """A `loc` from a media playlist URL must be a signed URL of this rendition's file on an appliance
    of the fleet — playback never renders a playlist pointing anywhere else."""
    parts = urlsplit(loc)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadLocation("loc: must be an absolute http(s) URL")
    if parts.path != "/" + r.key:
        raise BadLocation("loc: not this rendition's file")
    query = parse_qs(parts.query)
    if not all(query.get(k) for k in SIGNED_PARAMS):
        raise BadLocation("loc: not a signed URL")
    if base_of(loc) not in known_bases:
        raise BadLocation("loc: not an appliance of the fleet")
    return loc


def hls_media(r: Rendition, url: str) -> str:
    return playlists.media_playlist(r, url)


def dash_mpd(entry: TitleEntry, pathways: Sequence[Pathway], steering_uri: str | None) -> str:
    """The origin's MPD with each Representation's BaseURL repeated per pathway (serviceLocation)."""
    marker = "\x00{key}\x00"
    text = playlists.mpd(entry, lambda r: marker.format(key=r.key))
    out = []
    for line in text.splitlines():
        if "<BaseURL>\x00" in line:
            key = line.split("\x00")[1]
            indent = line[: len(line) - len(line.lstrip())]
            for p in pathways:
                if key in p.urls:
                    out.append(f'{indent}<BaseURL serviceLocation="{p.id}">{playlists._xml_text(p.urls[key])}</BaseURL>')
            continue
        out.append(line)
        if line.startswith("<MPD ") and steering_uri:
            out.append(f'  <ContentSteering defaultServiceLocation="{pathways[0].id}" queryBeforeStart="false">'
                       f"{playlists._xml_text(steering_uri)}</ContentSteering>")
    return "\n".join(out) + "\n"


def token_ttl_s(duration_s: float, factor: float, slack_s: int, min_s: int, max_s: int) -> int:
    """A token must outlast the title: duration x factor (pauses, seeks) + slack, within [min, max]."""
    return int(max(min_s, min(max_s, duration_s * factor + slack_s)))
