"""The catalog: one JSON document per title (`catalog/<id>.json` in the origin's store), written by
origin's ingest and read by playback (manifests), fill (what to copy and how to check it) and the
origin's own HTTP API. This module is the contract between them: the schema, its wire form and the
keys the entries live under.

An entry carries, per rendition, everything a player manifest needs — file key, size, xxh3-128, RFC 6381
codec, resolution, frame rate, bandwidth, the init and sidx byte ranges and every segment's (offset,
length, duration) — so playback renders HLS and DASH itself with absolute signed URLs, and fill knows
what to copy and how to check it. Wire format: camelCase JSON with `"schema": 1`; durations in seconds,
bandwidths in bits per second, sizes and offsets in bytes. `from_dict` refuses a malformed entry and
names the field. Search is here too, so every reader ranks the same way. Pure: no I/O.

Strategy: the parts an entry shares with its wire form (Span, Segment, Asset, Rendition) are msgspec
Structs, and `_Stored` is the object as stored: the entry with its metadata inline. One cached decoder
checks types and bounds in one pass (contracts.wirejson); the rules only a whole stored entry can break
(a video rendition's width and height, an audio one's language, at least one video) are
`_Stored.__post_init__`, run when decoding, never when ingest builds an entry. Writing stays the
explicit `to_dict` (derived `duration` and `bitrates`, durations rounded, each kind's own keys) and
`json.dumps`, so stored bytes are what they always were.
"""
from __future__ import annotations

import datetime as dt
import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping

import msgspec

from contracts import wirejson
from contracts.ids import FileKey
from contracts.structconf import invalid
from contracts.wirejson import Amount, Count

SCHEMA = 1
MAX_TITLE_LEN = 300
MAX_GENRES = 16
CATALOG_PREFIX = "catalog/"
_TITLE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*")


class CatalogError(Exception):
    """A catalog entry does not follow the schema (the message names the field). A stored entry
    that is broken is the origin's fault: 500 from an HTTP shell, exit 1 from a CLI."""

    status_hint = 500
    exit_code = 1


class BadMetadata(CatalogError):
    """A title id, title, genre, language or release date outside the schema: the caller's mistake
    (an ingest's arguments, a requested id)."""

    status_hint = 400
    exit_code = 2


# ---- where entries live in the origin's store ------------------------------------------------------

def validate_title_id(raw: str) -> str:
    if not _TITLE_ID.fullmatch(raw) or raw.endswith(".json"):
        raise BadMetadata(f"title id {raw!r}: 1-128 of [A-Za-z0-9_.-], starting with a letter or digit")
    return raw


def catalog_key(title_id: str) -> FileKey:
    return FileKey(f"{CATALOG_PREFIX}{validate_title_id(title_id)}.json")


def title_of_catalog_key(key: str) -> str | None:
    """The title id a catalog object is for, or None for anything else under catalog/."""
    if not key.startswith(CATALOG_PREFIX) or not key.endswith(".json"):
        return None
    title_id = key[len(CATALOG_PREFIX):-len(".json")]
    return title_id if _TITLE_ID.fullmatch(title_id) else None


def validate_languages(languages: tuple[str, ...]) -> tuple[str, ...]:
    for language in languages:
        if not _LANGUAGE.fullmatch(language):
            raise BadMetadata(f"language {language!r}: expected a BCP 47 tag such as 'en' or 'pt-BR'")
    return languages


class Segment(msgspec.Struct, frozen=True, array_like=True):  # [offset, length, duration] on the wire
    offset: Count
    length: Count
    duration_s: Amount = msgspec.field(name="duration")


class Span(msgspec.Struct, frozen=True):
    offset: Count
    length: Count

    @property
    def last(self) -> int:  # inclusive, as HTTP and DASH write ranges
        return self.offset + self.length - 1


class Rendition(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    name: str
    kind: Literal["video", "audio"] = msgspec.field(name="type")
    key: str
    size: Count
    xxh3: str
    codec: str
    bandwidth: Count  # peak segment bit rate (HLS BANDWIDTH)
    average_bandwidth: Count
    init: Span
    index: Span | None = None  # the sidx box, if the file has one
    segments: tuple[Segment, ...]
    playlist: str  # key of its HLS media playlist
    width: Count | None = None  # video: required
    height: Count | None = None
    frame_rate: Amount | None = None
    language: str | None = None  # audio: required
    channels: Count | None = None
    sample_rate: Count | None = None

    @property
    def duration_s(self) -> float:
        return sum(s.duration_s for s in self.segments)


class Asset(msgspec.Struct, frozen=True, rename="camel"):
    key: str
    size: Count
    xxh3: str
    content_type: str


@dataclass(frozen=True)
class Metadata:
    title_id: str
    title: str
    genres: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    release_date: str | None = None  # ISO 8601 date


@dataclass(frozen=True)
class TitleEntry:
    meta: Metadata
    version: str
    duration_s: float
    renditions: tuple[Rendition, ...]
    assets: tuple[Asset, ...]  # playlists, MPD, poster: everything besides the renditions
    master: str
    dash: str
    poster: str | None
    source: Mapping[str, Any] = field(default_factory=dict)  # how it was made (for idempotent re-ingest)
    ingested_at: str = ""

    @property
    def title_id(self) -> str:
        return self.meta.title_id

    @property
    def video(self) -> tuple[Rendition, ...]:
        return tuple(r for r in self.renditions if r.kind == "video")

    @property
    def audio(self) -> tuple[Rendition, ...]:
        return tuple(r for r in self.renditions if r.kind == "audio")

    def objects(self) -> tuple[tuple[str, int, str], ...]:
        """(key, size, xxh3) of every object the entry names, renditions first."""
        return tuple((r.key, r.size, r.xxh3) for r in self.renditions) + tuple(
            (a.key, a.size, a.xxh3) for a in self.assets)


def validate_metadata(meta: Metadata) -> Metadata:
    validate_title_id(meta.title_id)
    if not meta.title.strip() or len(meta.title) > MAX_TITLE_LEN:
        raise BadMetadata(f"title: 1-{MAX_TITLE_LEN} characters, not blank")
    if len(meta.genres) > MAX_GENRES or any(not g.strip() or len(g) > 64 for g in meta.genres):
        raise BadMetadata(f"genres: at most {MAX_GENRES}, each 1-64 characters")
    validate_languages(meta.languages)
    if meta.release_date is not None:
        try:
            dt.date.fromisoformat(meta.release_date)
        except ValueError:
            raise BadMetadata(f"release date {meta.release_date!r}: expected YYYY-MM-DD") from None
    return meta


def to_dict(entry: TitleEntry) -> dict[str, Any]:
    meta = entry.meta
    return {
        "schema": SCHEMA,
        "id": meta.title_id,
        "title": meta.title,
        "genres": list(meta.genres),
        "languages": list(meta.languages),
        "releaseDate": meta.release_date,
        "duration": round(entry.duration_s, 6),
        "bitrates": sorted(r.bandwidth for r in entry.video),
        "version": entry.version,
        "master": entry.master,
        "dash": entry.dash,
        "poster": entry.poster,
        "renditions": [_rendition_dict(r) for r in entry.renditions],
        "assets": [msgspec.to_builtins(a) for a in entry.assets],
        "source": dict(entry.source),
        "ingestedAt": entry.ingested_at,
    }


def _rendition_dict(r: Rendition) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": r.name, "type": r.kind, "key": r.key, "size": r.size, "xxh3": r.xxh3, "codec": r.codec,
        "bandwidth": r.bandwidth, "averageBandwidth": r.average_bandwidth, "duration": round(r.duration_s, 6),
    }
    if r.kind == "video":
        out.update(width=r.width, height=r.height, frameRate=r.frame_rate)
    else:
        out.update(language=r.language, channels=r.channels, sampleRate=r.sample_rate)
    out["init"] = msgspec.to_builtins(r.init)
    out["index"] = msgspec.to_builtins(r.index)
    out["segments"] = [[s.offset, s.length, round(s.duration_s, 6)] for s in r.segments]
    out["playlist"] = r.playlist
    return out


class _Stored(msgspec.Struct, frozen=True, rename="camel"):
    """A catalog object as stored: a TitleEntry with its metadata inline (and the derived `bitrates`
    and per-rendition `duration`, not read back)."""

    schema: Literal[1]
    id: str
    title: str
    genres: tuple[str, ...]
    languages: tuple[str, ...]
    duration: Amount
    version: str
    master: str
    dash: str
    renditions: tuple[Rendition, ...]
    assets: tuple[Asset, ...]
    source: dict[str, Any]
    ingested_at: str
    release_date: str | None = None
    poster: str | None = None

    def __post_init__(self) -> None:
        for i, r in enumerate(self.renditions):
            for name in _KIND_NEEDS[r.kind]:
                if getattr(r, name) is None:
                    raise invalid(f"renditions[{i}].{name}", f"required for {r.kind}")
        if not any(r.kind == "video" for r in self.renditions):
            raise invalid("renditions", "no video rendition")

    def entry(self) -> TitleEntry:
        meta = Metadata(self.id, self.title, self.genres, self.languages, self.release_date)
        try:
            validate_metadata(meta)
        except BadMetadata as exc:  # stored, so not the reader's mistake
            raise CatalogError(str(exc)) from None
        return TitleEntry(meta, self.version, self.duration, self.renditions, self.assets, self.master, self.dash,
                          self.poster, self.source, self.ingested_at)


_KIND_NEEDS = {"video": ("width", "height"), "audio": ("language",)}
_DECODER = wirejson.decoder(_Stored)


def from_dict(raw: Any) -> TitleEntry:
    """An entry from its decoded JSON object; CatalogError names the field."""
    return wirejson.from_builtins(_Stored, raw, CatalogError, first=_schema).entry()


def _schema(raw: Any) -> None:
    if not isinstance(raw, dict):
        raise CatalogError("entry: must be an object")
    if raw.get("schema") != SCHEMA:
        raise CatalogError(f"schema: version {raw.get('schema')!r} is not {SCHEMA}")


# ---- the wire form: bytes of one catalog object --------------------------------------------------

def decode(raw: bytes, where: str) -> TitleEntry:
    """An entry from the bytes of `catalog/<id>.json`; CatalogError names `where` and the field."""
    try:
        return wirejson.decode(_DECODER, raw, CatalogError, first=_schema).entry()
    except CatalogError as exc:
        raise CatalogError(f"{where}: {exc}") from None


def encode(entry: TitleEntry) -> bytes:
    return (json.dumps(to_dict(entry), separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def summary(entry: TitleEntry) -> dict[str, Any]:
    """What a title list shows: no renditions or segments."""
    full = to_dict(entry)
    return {k: full[k] for k in ("id", "title", "genres", "languages", "releaseDate", "duration", "bitrates",
                                 "version", "poster", "master", "dash")}


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def match_score(entry: TitleEntry, query: str) -> int:
    """How well `query` names the title: 0 is no match; exact > id > prefix > every word > substring."""
    q, title = _fold(query).strip(), _fold(entry.meta.title)
    if not q:
        return 1
    words = title.replace("-", " ").split()
    if q == title:
        return 100
    if q == _fold(entry.title_id):
        return 90
    if title.startswith(q):
        return 80
    if all(any(w.startswith(part) for w in words) for part in q.split()):
        return 60
    return 40 if q in title else 0


def search(entries: Iterable[TitleEntry], query: str | None = None, genre: str | None = None) -> list[TitleEntry]:
    """Entries matching `query` (title words) and `genre` (exact, case-insensitive), best first."""
    wanted_genre = _fold(genre) if genre else None
    scored = []
    for entry in entries:
        if wanted_genre is not None and wanted_genre not in {_fold(g) for g in entry.meta.genres}:
            continue
        score = match_score(entry, query) if query else 1
        if score:
            scored.append((-score, _fold(entry.meta.title), entry.title_id, entry))
    return [item[-1] for item in sorted(scored, key=lambda item: item[:3])]
