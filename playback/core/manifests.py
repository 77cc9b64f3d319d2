"""Player manifests for one play: HLS multivariant + media playlists and a DASH MPD whose URLs point at
the appliances steering chose for this client, with one *pathway* per site (playback.core.pathways:
labels that name where the bytes come from, holders first, no duplicate pathway).

Strategy. Steering answers every rendition file with its ranked, signed appliance URLs; pathways group
them by site. The HLS master repeats every variant once per pathway (`PATHWAY-ID`, an audio group per
pathway, and `STABLE-VARIANT-ID` / `STABLE-RENDITION-ID` = the rendition's name, the same on every
pathway, which is what lets the steering manifest add a pathway later as a PATHWAY-CLONE with
PER-VARIANT-URIS: `pathway_clone`). A player with Content Steering follows the steering manifest; one
without treats the copies as redundant variants and fails over. Media playlists are rendered by
playback too (`<rendition>.m3u8?loc=<signed URL>`), stateless: the signed appliance URL rides in the
query and is checked against the rendition's key and the fleet's appliances. The MPD lists one BaseURL
per pathway (`serviceLocation`), holders' first, and a DASH-IF `<ContentSteering>` element. The
origin's pure renderers (origin.core.playlists) do the per-rendition work.

Documents are built from validated parts only (playback.core.parts): every URL — steering's, the
client's `loc`, our own steering URI — is parsed and re-serialised from its components, never copied;
every catalog string that reaches a document is checked against its grammar before a renderer sees it,
and every quoted value we add is checked (HLS) or escaped (XML).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from contracts.catalog import Rendition, TitleEntry
from origin.core import playlists
from playback.core import parts, steer
from playback.core.parts import BadCatalog, BadLocation, PlaybackError, Url
from playback.core.pathways import NoLocations, Pathway, Where, pathway_id
from playback.core.pathways import build_pathways as _build_pathways

__all__ = ["BadCatalog", "BadLocation", "NoLocations", "Pathway", "PlaybackError", "Url", "Where", "build_pathways",
           "check_location", "dash_mpd", "hls_master", "hls_media", "parse_pathways", "pathway_clone", "pathway_id",
           "steering_uri", "token_ttl_s"]

SIGNED_PARAMS = ("e", "k", "c", "s")
TOKEN_PARAMS = ("e", "k", "c", "s", "t", "f")
MAX_PATHWAYS_PARAM = steer.MAX_PATHWAYS


def build_pathways(entry: TitleEntry, locations: Mapping[str, Sequence[str]],
                   where: Callable[[str], "Where | str"], max_pathways: int = 4,
                   holds: Mapping[str, Sequence[bool]] | None = None,
                   on_refused: Callable[[str], None] | None = None) -> tuple[Pathway, ...]:
    """playback.core.pathways.build_pathways; `where` maps a URL's origin to its appliance and site
    (a bare name: an appliance that is its own site)."""
    def located(origin: str) -> Where:
        found = where(origin)
        return found if isinstance(found, Where) else Where(str(found), str(found))
    return _build_pathways(entry, locations, located, max_pathways, holds, on_refused)


def parse_pathways(raw: str) -> list[str]:
    """The pathway ids of a steering manifest URL's `pathways` parameter."""
    return steer.parse_session({"pathways": raw}).ids


def steering_uri(title_id: str, session: "steer.Session | Sequence[str]", dash: bool, base: str = "") -> Url:
    """The steering manifest's URI (SERVER-URI / ContentSteering, and its own RELOAD-URI) on this server,
    carrying the session (playback.core.steer): absolute on `base` (scheme://host[:port], as players
    reach us) — dash.js does not resolve a relative one against the MPD's URL — or a rooted reference
    without it. A plain list of ids is a session of one-appliance pathways."""
    if not isinstance(session, steer.Session):
        ids = list(session)
        if not ids or any(pathway_id(p) != p for p in ids):
            raise PlaybackError("pathways: a comma-separated list of pathway ids")
        session = steer.Session(tuple(steer.SessionPathway(p, (p,)) for p in ids))
    query: parts.Query = steer.session_query(session) + ((("dash", "1"),) if dash else ())
    segments = ("v1", "playback", parts.check_title_id(title_id), "steering.json")
    if not base:
        return Url.reference(segments, query)
    origin = parts.parse_url(base + "/", "this server's public URL")
    return Url(origin.scheme, origin.host, origin.port, True, segments, query)


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
    """Every variant per pathway; the origin's renderer does one pathway, we relabel its groups and
    add the pathway and stable ids (rendition names: checked against their grammar, which HLS's
    stable-id grammar contains)."""
    entry = _checked(entry)
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{playlists.HLS_VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if steering is not None:
        server_uri = parts.hls_quoted(_as_url(steering, "steering URI").text, "steering URI", PlaybackError)
        first = parts.hls_quoted(pathways[0].id, "pathway", PlaybackError)
        lines.append(f"#EXT-X-CONTENT-STEERING:SERVER-URI={server_uri},PATHWAY-ID={first}")
    for i, p in enumerate(pathways):
        pid = parts.hls_quoted(p.id, "pathway", PlaybackError)
        held = [r for r in entry.renditions if r.key in p.urls]
        index = {r.key: n for n, r in enumerate(held)}
        sub = TitleEntry(meta=entry.meta, version=entry.version, duration_s=entry.duration_s,
                         renditions=tuple(held), assets=(), master="", dash="", poster=None)
        text = playlists.master_playlist(sub, lambda r: f"\x00{index[r.key]}\x00")  # validated: no NUL inside
        group = f"{playlists.AUDIO_GROUP}-{i}"
        for line in text.rstrip("\n").split("\n")[3:]:
            r = held[int(line.split("\x00")[1])] if "\x00" in line else None
            if r is not None:
                line = line.replace(f"\x00{index[r.key]}\x00", _media_uri(r, p.urls[r.key]))
            if line.startswith("#EXT-X-MEDIA:") and r is not None:
                line = line.replace(f'GROUP-ID="{playlists.AUDIO_GROUP}"', f'GROUP-ID="{group}"')
                line += f',STABLE-RENDITION-ID="{r.name}"'
            elif line.startswith("#EXT-X-STREAM-INF:"):
                line = line.replace(f'AUDIO="{playlists.AUDIO_GROUP}"', f'AUDIO="{group}"')
                line += f",PATHWAY-ID={pid}"
            elif r is not None and lines[-1].startswith("#EXT-X-STREAM-INF:"):
                lines[-1] += f',STABLE-VARIANT-ID="{r.name}"'
            lines.append(line)
    return "\n".join(lines) + "\n"


def pathway_clone(entry: TitleEntry, clone: Pathway, base_id: str, media_base: Url) -> dict[str, Any]:
    """A PATHWAY-CLONES entry (HLS Content Steering): `clone`'s media playlists, absolute on
    `media_base` (this server, as players reach it: hls.js takes a per-variant URI as it is), by the
    stable ids hls_master gave every variant and audio rendition. `clone` has every rendition
    (steer.new_pathways), so no variant of the base keeps the base's URI."""
    entry = _checked(entry)
    origin = parts.parse_url(media_base.origin + "/", "this server's public URL")

    def uri(r: Rendition) -> str:
        segments = ("v1", "playback", entry.title_id, f"{r.name}.m3u8")
        return Url(origin.scheme, origin.host, origin.port, True, segments, (("loc", clone.urls[r.key].text),)).text

    return {"BASE-ID": base_id, "ID": clone.id, "URI-REPLACEMENT": {
        "PER-VARIANT-URIS": {r.name: uri(r) for r in entry.video if r.key in clone.urls},
        "PER-RENDITION-URIS": {r.name: uri(r) for r in entry.audio if r.key in clone.urls}}}


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
            # holders' BaseURLs first (a player without steering tries them in order), else pathway order
            for p in sorted(pathways, key=lambda p: p.held.get(key) is False):
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
