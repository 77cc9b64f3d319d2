"""The integrity scrub: a background pass that re-reads every stored file at a bounded rate and
re-checks its xxh3-128 against the index. A file whose bytes no longer match (bit rot, a bad
sector that still reads, a hand edit) is dropped from the index and unlinked at once — it is never
served again once detected — and counted; the next fill run fetches it again, since the manifest
still lists it. Reads are paced to `rate_bps`, so serving keeps the disks."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import xxhash

from oca.store.errors import StoreError, WriteInProgress

if TYPE_CHECKING:
    from oca.store.store import Store

CHUNK = 1 << 20


@dataclass
class ScrubStats:
    files_checked: int = 0
    bytes_checked: int = 0
    corrupt: int = 0


def check_file(store: "Store", key: str, rate_bps: float, stop: Callable[[], bool]) -> bool | None:
    """True when the file matches its hash, False when it does not (it is then dropped), None when it
    is gone, busy or the scrub was stopped."""
    entry = store.index.get(key)  # type: ignore[arg-type]
    if entry is None or store.is_busy(key):  # being written or moved, by any process
        return None
    try:
        fd = store.open_entry(entry)
    except (StoreError, OSError):
        return None  # a missing or unreadable file is the disk checker's business
    hasher, offset, started = xxhash.xxh3_128(), 0, time.monotonic()
    try:
        while offset < entry.size:
            if stop():
                return None
            data = os.pread(fd, min(CHUNK, entry.size - offset), offset)
            if not data:
                break
            hasher.update(data)
            offset += len(data)
            ahead = offset / rate_bps - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
    finally:
        os.close(fd)
    if offset == entry.size and hasher.hexdigest() == entry.xxh3:
        return True
    if store.index.get(key) != entry:  # replaced or moved while we read: not evidence of rot
        return None
    try:
        store.remove(key)
    except WriteInProgress:  # being rewritten or moved right now: check it again next pass
        return None
    return False


def scrub_pass(store: "Store", rate_bps: float, stats: ScrubStats, stop: Callable[[], bool],
               on_corrupt: Callable[[str], None]) -> None:
    for entry in store.index.all():
        if stop():
            return
        verdict = check_file(store, entry.key, rate_bps, stop)
        if verdict is None:
            continue
        stats.files_checked += 1
        stats.bytes_checked += entry.size
        if verdict is False:
            stats.corrupt += 1
            on_corrupt(entry.key)
