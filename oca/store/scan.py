"""Reconcile a disk with the index, and sweep its temp directory.

`scan_disk` indexes regular files found on the disk that the index lacks or has with another size or
mtime (dev mode: a user drops files into DIR; a disk back from failure), hashing only those, and drops
entries of that disk whose file vanished. It walks with os.fwalk(follow_symlinks=False): a symlink is
never followed, whether it points at a file or a directory, inside the disk or out of it. Names that
are not valid FileKey segments (.tmp, .oca, "a b.mp4") are skipped, so are sockets, fifos, devices."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from contracts.ids import FileKey, is_valid_file_key
from oca.store import fsutil
from oca.store.errors import DiskFailed
from oca.store.fsutil import DIR_FLAGS, TMP_DIR
from oca.config import DiskConfig
from oca.store.index import FileEntry, Index

_OWN_DIRS = (TMP_DIR, ".oca")  # the store's own, at a disk's root: not worth counting as skipped
BATCH = 1000  # entries per index transaction: a big scan never holds the write lock for long


@dataclass(frozen=True)
class ScanResult:
    added: int = 0  # new or changed files, hashed and indexed
    removed: int = 0  # entries whose file vanished
    unchanged: int = 0
    skipped: int = 0  # not a regular file, not a valid key, unreadable, or indexed on another disk
    restored: int = 0  # of `added`: unchanged since the disk failed, hash reused instead of re-read


def _walk(root: str) -> Iterator[tuple[FileKey | None, os.stat_result | None]]:
    """(key, lstat) of every regular file with a valid key below `root`; (None, None) per skip."""
    for dirpath, dirnames, filenames, dirfd in os.fwalk(root, follow_symlinks=False):
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        kept = [d for d in dirnames if is_valid_file_key(d)]
        skipped = sum(1 for d in dirnames if d not in kept and not (prefix == "" and d in _OWN_DIRS))
        dirnames[:] = kept
        for _ in range(skipped):
            yield None, None
        for name in filenames:
            key = prefix + name
            try:
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            except OSError:
                yield None, None
                continue
            if stat.S_ISREG(st.st_mode) and is_valid_file_key(key):
                yield FileKey(key), st
            else:
                yield None, None


def scan_disk(index: Index, config: DiskConfig, busy: Callable[[], set[str]]) -> ScanResult:
    """Bring the index in line with what `config`'s disk holds; keys `busy()` names (being written
    or moved, by any process) are not dropped for being absent."""
    disk = str(config.path)
    if not os.path.isdir(disk):
        raise DiskFailed(f"{disk}: missing")
    indexed = {e.key: e for e in index.on_disk(disk)}
    parked = index.parked_on(disk)  # a disk back from failure: trust unchanged files' hashes
    seen: set[str] = set()
    batch: list[FileEntry] = []
    added = unchanged = skipped = restored = 0
    for key, st in _walk(disk):
        if key is None:
            skipped += 1
            continue
        seen.add(key)
        old = indexed.get(key)
        if old is not None and old.size == st.st_size and old.mtime == st.st_mtime:
            unchanged += 1
            continue
        if old is None and (other := index.get(key)) is not None and other.disk != disk:
            skipped += 1  # the same key on two disks: the indexed copy wins
            continue
        known = parked.get(key) if old is None else None
        if known is not None and known.size == st.st_size and known.mtime == st.st_mtime:
            digest = known.xxh3
            restored += 1
        else:
            try:
                digest, st = fsutil.hash_file(disk, key)
            except OSError:
                skipped += 1  # vanished or replaced by a symlink since the walk
                continue
        batch.append(FileEntry(key, config.tier, disk, st.st_size, digest, st.st_mtime))
        added += 1
        if len(batch) >= BATCH:
            index.upsert_many(batch, same_disk_only=True)
            batch = []
    if batch:
        index.upsert_many(batch, same_disk_only=True)
    in_flight = busy()
    gone = [k for k in indexed if k not in seen and k not in in_flight]
    removed = index.remove_many(gone, disk=disk) if gone else 0
    if parked:
        index.unpark(disk)
    return ScanResult(added, removed, unchanged, skipped, restored)


def clean_tmp(disks: Iterable[str], now: float, max_age_s: float, part_max_age_s: float, live: set[str]) -> int:
    """Remove temp files of writers that died (`.tmp` older than `max_age_s`: a live writer keeps
    touching its file), resumable `.part` files untouched for `part_max_age_s`, stray probe files.
    Files of writes in flight in any process (`live`, names from the index's `writes` table) are kept
    whatever their age. `disks`: the ones not failed. The caller holds the placement lock (see
    Store.clean_tmp)."""
    removed = 0
    for disk in disks:
        try:
            dfd = os.open(os.path.join(disk, TMP_DIR), DIR_FLAGS)
        except OSError:
            continue
        try:
            for entry in os.scandir(dfd):
                removed += _maybe_remove(dfd, entry, now, max_age_s, part_max_age_s, live)
        finally:
            os.close(dfd)
    return removed


def _maybe_remove(dfd: int, entry: os.DirEntry, now: float, max_age_s: float, part_max_age_s: float,
                  live: set[str]) -> int:
    if entry.name in live:
        return 0
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:
        return 0
    limit = part_max_age_s if entry.name.endswith(".part") else max_age_s
    if stat.S_ISDIR(st.st_mode) or now - st.st_mtime < limit:
        return 0
    try:
        os.unlink(entry.name, dir_fd=dfd)
        return 1
    except OSError:
        return 0
