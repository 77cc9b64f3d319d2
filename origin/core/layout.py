"""Where things live in the origin, one spelling for every backend:

    catalog/<title id>.json                     the catalog entry: the single source of truth
                                                (contracts.catalog: its schema and keys)
    files/<title id>/<version>/<rendition>.mp4  one file per rendition (fill and players fetch these)
    files/<title id>/<version>/<rendition>.m3u8 media playlists, master.m3u8, manifest.mpd, poster.jpg

The version is derived from the content: a hash over every media file's (name, xxh3-128). The same
content gives the same keys, so a re-ingest finds everything in place; changed content gets new keys
and the old files stay for appliances whose fill manifests still list them (`gc` removes them later).
Every key is a contracts FileKey, so it is also a valid path inside an appliance's cache.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

import xxhash

from contracts.catalog import validate_title_id
from contracts.ids import FileKey, InvalidFileKey, validate_file_key
from origin.core.errors import UsageError

FILES_PREFIX = "files/"
MASTER = "master.m3u8"
DASH = "manifest.mpd"
POSTER = "poster.jpg"
_VERSION = re.compile(r"v[0-9a-f]{16}")


def title_prefix(title_id: str) -> str:
    return f"{FILES_PREFIX}{validate_title_id(title_id)}/"


def file_key(title_id: str, version: str, name: str) -> FileKey:
    if not _VERSION.fullmatch(version):
        raise ValueError(f"not a version: {version!r}")
    try:
        return validate_file_key(f"{title_prefix(title_id)}{version}/{name}")
    except InvalidFileKey as exc:
        raise UsageError(str(exc)) from None


def version_of(media: Iterable[tuple[str, str]]) -> str:
    """The version for a set of (file name, xxh3-128 hex) pairs, order-independent."""
    lines = "".join(f"{name}\t{digest}\n" for name, digest in sorted(media))
    return "v" + xxhash.xxh3_128_hexdigest(lines.encode())[:16]


@dataclass(frozen=True)
class GcPlan:
    delete: tuple[str, ...]
    kept_referenced: tuple[str, ...]  # old, but a fill manifest still lists them


def plan_gc(objects: Iterable[str], current: Iterable[str], referenced: Iterable[str]) -> GcPlan:
    """Which objects under files/ may go: not in any current catalog entry, not in any manifest.

    Whole version directories go together: a version any of whose files is current or referenced
    stays whole (its playlists point at its files)."""
    current_versions = {_version_dir(k) for k in current}
    referenced_versions = {_version_dir(k) for k in referenced}
    delete, kept = [], []
    for key in sorted(objects):
        if not key.startswith(FILES_PREFIX):
            continue
        version_dir = _version_dir(key)
        if version_dir in current_versions:
            continue
        (kept if version_dir in referenced_versions else delete).append(key)
    return GcPlan(tuple(delete), tuple(kept))


def _version_dir(key: str) -> str:
    return key.rsplit("/", 1)[0]
