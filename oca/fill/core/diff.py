"""The manifest against what the appliance holds: what to fetch (in priority order), what to keep,
what to delete — and when deleting is allowed: only once every manifest file is in place, so an
appliance keeps serving last night's set until tonight's is complete. Only files an earlier manifest
put there ("managed") are deleted; anything else (pull-through, `oca put`) is left to eviction.
Also: does a manifest name files the catalog does not know (or knows with another size or hash)?"""
from __future__ import annotations

from dataclasses import dataclass
from typing import AbstractSet, Iterable, Mapping

from contracts.ids import FileKey
from contracts.manifest import Manifest, ManifestFile


@dataclass(frozen=True, slots=True)
class Held:
    key: FileKey
    size: int
    xxh3: str
    tier: str


@dataclass(frozen=True)
class FillDiff:
    fetch: tuple[ManifestFile, ...]  # missing or different: priority order (0 first)
    keep: tuple[FileKey, ...]  # held as the manifest says
    replace: tuple[FileKey, ...]  # of `fetch`: held with another size or hash
    delete_later: tuple[FileKey, ...]  # managed, held, not in the manifest: go once the set is complete

    @property
    def fetch_bytes(self) -> int:
        return sum(f.size for f in self.fetch)


def matches(f: ManifestFile, held: Held | None) -> bool:
    return held is not None and held.size == f.size and held.xxh3 == f.xxh3


def diff(manifest: Manifest, held: Mapping[FileKey, Held], managed: AbstractSet[FileKey]) -> FillDiff:
    fetch, keep, replace = [], [], []
    for f in sorted(manifest.files, key=lambda m: (m.priority, m.key)):
        h = held.get(f.key)
        if matches(f, h):
            keep.append(f.key)
        else:
            fetch.append(f)
            if h is not None:
                replace.append(f.key)
    wanted = manifest.keys()
    delete = sorted(k for k in managed if k in held and k not in wanted)
    return FillDiff(tuple(fetch), tuple(keep), tuple(replace), tuple(delete))


def complete(manifest: Manifest, held: Mapping[FileKey, Held]) -> bool:
    """Every manifest file is held with its size and hash: the new set is in place."""
    return all(matches(f, held.get(f.key)) for f in manifest.files)


def deletions(manifest: Manifest, held: Mapping[FileKey, Held], managed: AbstractSet[FileKey]) -> tuple[FileKey, ...]:
    """What to delete now: nothing unless the set is complete; then managed files that left it."""
    if not complete(manifest, held):
        return ()
    wanted = manifest.keys()
    return tuple(sorted(k for k in managed if k in held and k not in wanted))


def unknown_files(files: Iterable[ManifestFile], catalog: Mapping[FileKey, tuple[int, str]]) -> list[str]:
    """Problems with a manifest's files against the catalog's (size, xxh3) per key; empty when fine."""
    problems = []
    for i, f in enumerate(files):
        known = catalog.get(f.key)
        if known is None:
            problems.append(f"files[{i}].key: {f.key!r} is not in the catalog")
        elif known != (f.size, f.xxh3):
            problems.append(f"files[{i}]: {f.key!r} is {known[0]} bytes / {known[1]} in the catalog, "
                            f"the manifest says {f.size} / {f.xxh3}")
    return problems
