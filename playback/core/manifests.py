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

Documents are built from validated parts only (playback.core.parts): every URL — steering's, the
client's `loc`, our own steering URI — is parsed and re-serialised from its components, never copied;
every catalog string that reaches a document is checked against its grammar before a renderer sees it,
and every quoted value we add is checked (HLS) or escaped (XML).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from origin.core import playlists
from origin.core.catalog import Rendition, TitleEntry
from playback.core import parts
from playback.core.parts import BadCatalog, BadLocation, PlaybackError, Url

__all__ = ["BadCatalog", "BadLocation", "NoLocations", "Pathway", "PlaybackError", "Url", "build_pathways",
           "check_location", "dash_mpd", "hls_master", "hls_media", "parse_pathways", "pathway_id",
           "steering_uri", "token_ttl_s"]

SIGNED_PARAMS = ("e", "k", "c", "s")
TOKEN_PARAMS = ("e", "k", "c", "s", "t", "f")
MAX_PATHWAYS_PARAM = 16
_PATHWAY_CHARS = re.compile(r"[^A-Za-z0-9._-]")


class NoLocations(PlaybackError):
    """Steering answered, but some file has no appliance (nothing healthy holds it)."""
    status_hint = 503
    reason = "no-locations"


@dataclass(frozen=True)
class Pathway:
    id: str
    urls: Mapping[str, Url]  # file key -> signed URL on this pathway's appliance


def pathway_id(name: str) -> str:
    return _PATHWAY_CHARS.sub("_", name)[:64] or "p"


def parse_pathways(raw: str) -> list[str]:
    """The `pathways` query parameter of a steering manifest URL: comma-separated pathway ids."""
    pathways = [p for p in raw.split(",") if p][:MAX_PATHWAYS_PARAM]
    if not pathways or any(pathway_id(p) != p for p in pathways):
        raise PlaybackError("pathways: a comma-separated list of pathway ids")
    return pathways


def steering_uri(title_id: str, pathways: Sequence[str], dash: bool, base: str = "") -> Url:
    """The steering manifest's URI (SERVER-URI / ContentSteering, and its own RELOAD-URI) on this server:
    absolute on `base` (scheme://host[:port], as players reach us) — dash.js does not resolve a relative
    one against the MPD's URL — or a rooted reference without it."""
    if not pathways or any(pathway_id(p) != p for p in pathways):
        raise PlaybackError("pathways: a comma-separated list of pathway ids")
    query: parts.Query = (("pathways", ",".join(pathways)),) + ((("dash", "1"),) if dash else ())
    segments = ("v1", "playback", parts.check_title_id(title_id), "steering.json")
    if not base:
        return Url.reference(segments, query)
    origin = parts.parse_url(base + "/", "this server's public URL")
    return Url(origin.scheme, origin.host, origin.port, True, segments, query)


def _ranked(key: str, urls: Sequence[str], flags: Sequence[bool],
            on_refused: Callable[[str], None] | None) -> list[tuple[Url, bool | None]]:
    """Steering's URLs for one file, parsed (a malformed one is left out and reported), each with its
    `holds` flag (None: steering didn't say)."""
    out = []
    for rank, text in enumerate(urls):
        try:
            url = parts.parse_url(text, f"steering's URL for {key}")
        except BadLocation as exc:
            if on_refused is not None:
                on_refused(str(exc))
            continue
        out.append((url, flags[rank] if rank < len(flags) else None))
    return out


def build_pathways(entry: TitleEntry, locations: Mapping[str, Sequence[str]], name_of: Callable[[str], str],
                   max_pathways: int = 4, holds: Mapping[str, Sequence[bool]] | None = None,
                   on_refused: Callable[[str], None] | None = None) -> tuple[Pathway, ...]:
    """Group every file's ranked URLs by appliance (`name_of(base URL)`), best-ranked appliance first.
    Fill places files one by one, so an appliance may hold only some of a title: where steering says
    (`holds`, a flag per location) that a pathway's appliance lacks a file, that pathway takes the
    file's best holder instead, so no pathway leads a player to a 404. A pathway needs every audio
    rendition and at least one video rendition; raises NoLocations when a file has no URL at all or
    no pathway is complete. A URL that doesn't parse is left out and told to `on_refused`."""
    ranked = {r.key: _ranked(r.key, locations.get(r.key) or (), (holds or {}).get(r.key) or (), on_refused)
              for r in entry.renditions}
    missing = [key for key, urls in ranked.items() if not urls]
    if missing:
        raise NoLocations(f"no appliance serves {missing[0]}")
    score: dict[str, float] = {}
    urls: dict[str, dict[str, Url]] = {}
    for key, located in ranked.items():
        held = [u for u, h in located if h]
        best = held[0] if held else located[0][0]  # the URL on the file's best-ranked holder
        for rank, (url, flag) in enumerate(located):
            pid = pathway_id(name_of(url.origin))
            urls.setdefault(pid, {})[key] = best if flag is False else url
            score[pid] = score.get(pid, 0.0) + rank
    n = len(entry.renditions)
    out = []
    for pid in sorted(urls, key=lambda p: (score[p] + 100 * (n - len(urls[p])), p)):
        got = urls[pid]
        if all(a.key in got for a in entry.audio) and any(v.key in got for v in entry.video):
            out.append(Pathway(pid, got))
    if not out:
        raise NoLocations("no appliance holds a playable set of renditions")
    return tuple(out[:max_pathways])


def _checked(entry: TitleEntry) -> TitleEntry:
    """The entry, once every catalog string a renderer places matches its grammar (else BadCatalog)."""
    parts.check_title_id(entry.title_id)
    for i, r in enumerate(entry.renditions):
        parts.check_rendition(r, f"{entry.title_id}: renditions[{i}]")
    return entry


def _as_url(uri: Url | str, where: str) -> Url:
    return uri if isinstance(uri, Url) else parts.parse_url(uri, where, relative=True, error=PlaybackError)


def _media_uri(r: Rendition, url: Url) -> str:
    return Url.reference((f"{r.name}.m3u8",), (("loc", url.text),), rooted=False).text


def hls_master(entry: TitleEntry, pathways: Sequence[Pathway], steering: Url | str | None) -> str:
    """Every variant per pathway; the origin's renderer does one pathway, we relabel its groups."""
    entry = _checked(entry)
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{playlists.HLS_VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if steering is not None:
        server_uri = parts.hls_quoted(_as_url(steering, "steering URI").text, "steering URI", PlaybackError)
        first = parts.hls_quoted(pathways[0].id, "pathway", PlaybackError)
        lines.append(f"#EXT-X-CONTENT-STEERING:SERVER-URI={server_uri},PATHWAY-ID={first}")
    for i, p in enumerate(pathways):
        pid = parts.hls_quoted(p.id, "pathway", PlaybackError)
        held = [r for r in entry.renditions if r.key in p.urls]
        sub = TitleEntry(meta=entry.meta, version=entry.version, duration_s=entry.duration_s,
                         renditions=tuple(held), assets=(), master="", dash="", poster=None)
        text = playlists.master_playlist(sub, lambda r, p=p: _media_uri(r, p.urls[r.key]))
        group = f"{playlists.AUDIO_GROUP}-{i}"
        for line in text.rstrip("\n").split("\n")[3:]:
            line = line.replace(f'GROUP-ID="{playlists.AUDIO_GROUP}"', f'GROUP-ID="{group}"')
            if line.startswith("#EXT-X-STREAM-INF:"):
                line = line.replace(f'AUDIO="{playlists.AUDIO_GROUP}"', f'AUDIO="{group}"')
                line += f",PATHWAY-ID={pid}"
            lines.append(line)
    return "\n".join(lines) + "\n"


def check_location(r: Rendition, loc: str, known_bases: Sequence[str]) -> Url:
    """A `loc` from a media playlist URL must be a signed URL of this rendition's file on an appliance
    of the fleet — playback never renders a playlist pointing anywhere else. Returns its components:
    the playlist gets their serialisation, never `loc` itself."""
    parts.check_rendition(r, "rendition")
    url = parts.parse_url(loc, "loc")
    if not url.rooted or url.segments != tuple(r.key.split("/")):
        raise BadLocation("loc: not this rendition's file")
    if any(len(url.params(k)) > 1 for k in TOKEN_PARAMS):
        raise BadLocation("loc: a token parameter is repeated")
    if not all(url.params(k) and url.params(k)[0] for k in SIGNED_PARAMS):
        raise BadLocation("loc: not a signed URL")
    if url.origin not in _origins(known_bases):
        raise BadLocation("loc: not an appliance of the fleet")
    return url


def _origins(bases: Sequence[str]) -> set[str]:
    out = set()
    for base in bases:
        try:
            out.add(parts.parse_url(base, "base").origin)
        except BadLocation:
            continue  # a fleet entry we can't read is no appliance a loc may name
    return out


def hls_media(r: Rendition, url: Url | str) -> str:
    parts.check_rendition(r, "rendition")
    located = url if isinstance(url, Url) else parts.parse_url(url, "loc")
    return playlists.media_playlist(r, located.text)  # encoded: no '"', no line break, no leading '#'


def dash_mpd(entry: TitleEntry, pathways: Sequence[Pathway], steering: Url | str | None) -> str:
    """The origin's MPD with each Representation's BaseURL repeated per pathway (serviceLocation)."""
    entry = _checked(entry)
    index = {r.key: i for i, r in enumerate(entry.renditions)}
    text = playlists.mpd(entry, lambda r: f"\x00{index[r.key]}\x00")  # validated strings hold no NUL
    out = []
    for line in text.rstrip("\n").split("\n"):
        if "<BaseURL>\x00" in line:
            key = entry.renditions[int(line.split("\x00")[1])].key
            indent = line[: len(line) - len(line.lstrip())]
            for p in pathways:
                if key in p.urls:
                    out.append(f"{indent}<BaseURL serviceLocation={parts.xml_attr(p.id, 'pathway', PlaybackError)}>"
                               f"{parts.xml_text(p.urls[key].text, 'URL', PlaybackError)}</BaseURL>")
            continue
        out.append(line)
        if line.startswith("<MPD ") and steering is not None:
            uri = parts.xml_text(_as_url(steering, "steering URI").text, "steering URI", PlaybackError)
            first = parts.xml_attr(pathways[0].id, "pathway", PlaybackError)
            out.append(f'  <ContentSteering defaultServiceLocation={first} queryBeforeStart="false">{uri}'
                       "</ContentSteering>")
    return "\n".join(out) + "\n"


def token_ttl_s(duration_s: float, factor: float, slack_s: int, min_s: int, max_s: int) -> int:
    """A token must outlast the title: duration x factor (pauses, seeks) + slack, within [min, max]."""
    return int(max(min_s, min(max_s, duration_s * factor + slack_s)))
