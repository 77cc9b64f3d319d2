"""Disk health: probe each disk and keep the index's disk states true.

A probe checks the disk is a directory (and still mounted, if it was a mount point at open), reads
statvfs (a read-only remount shows in f_flag), creates + writes + fsyncs + unlinks a small file in
.tmp, and reads 4 KiB of one indexed file (a different one each time) after dropping that page from
the cache, so an unreadable medium shows up as EIO here and not only in a client's response. A disk
that fails is marked failed in the index, which drops its files (readers stop serving them at once);
it stays failed until a probe passes again, then it is marked ok and scanned back in."""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from oca.config import DiskConfig, Tier
from oca.store import fsutil
from oca.store.errors import StoreError
from oca.store.fsutil import DIR_FLAGS, TMP_DIR
from oca.store.index import Index

PROBE_BYTES = 4096
_HARMLESS = (errno.ENOENT, errno.ELOOP, errno.EISDIR, errno.ENOTDIR)  # the file changed, not the disk


@dataclass(frozen=True)
class DiskHealth:
    path: str
    tier: Tier
    ok: bool
    reason: str  # "" when ok
    total_bytes: int
    free_bytes: int  # free to us: minus the disk's reserve
    files: int
    used_bytes: int  # bytes of indexed files


def disk_json(d: DiskHealth) -> dict[str, Any]:
    """A disk's health as /v1/health, `oca disks` and heartbeats show it."""
    return {"path": d.path, "tier": d.tier.value, "ok": d.ok, "reason": d.reason, "total_bytes": d.total_bytes,
            "free_bytes": d.free_bytes, "files": d.files}


class DiskChecker:
    """Probes a store's disks (Store.check_disks) and keeps the index's disk states true. It holds what
    probing remembers between rounds: which disks were mount points when the store opened (shared
    with the store, which places no file on an unmounted one) and where each disk's read probe is."""

    def __init__(self, index: Index, disks: Mapping[str, DiskConfig], was_mount: Mapping[str, bool]) -> None:
        self.index = index
        self.disks = disks
        self.was_mount = was_mount
        self.probe_cursor: dict[str, str] = {}  # disk -> the key its last read probe read

    def check(self, rescan: Callable[[str], object]) -> list[DiskHealth]:
        """Probe every disk; a disk back from failure is marked ok and `rescan`ned in."""
        states = self.index.disk_states()
        report = []
        for path, disk in self.disks.items():
            reason, total, free = self.probe(disk)
            was_failed = path in states and states[path].failed
            if reason and not was_failed:
                self.index.mark_disk_failed(path, reason)
            elif not reason and was_failed:
                self.index.mark_disk_ok(path)
                try:
                    rescan(path)
                except (StoreError, OSError) as exc:
                    reason = f"scan after recovery failed: {exc}"
                    self.index.mark_disk_failed(path, reason)
            report.append((disk, reason, total, free))
        usage = self.index.disk_usage()
        return [DiskHealth(str(d.path), d.tier, not reason, reason, total, max(free - d.reserve_bytes, 0),
                           *usage.get(str(d.path), (0, 0)))
                for d, reason, total, free in report]

    def probe(self, disk: DiskConfig) -> tuple[str, int, int]:
        """(reason it failed or "", total bytes, free bytes) of one disk."""
        path = str(disk.path)
        total = free = 0
        try:
            if not os.path.isdir(path):
                return "missing or not a directory", 0, 0
            if self.was_mount.get(path) and not fsutil.is_mount(path):
                return "no longer mounted", 0, 0
            st = os.statvfs(path)
            total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
            if st.f_flag & os.ST_RDONLY:
                return "read-only filesystem", total, free
            _write_probe(path)
            self._read_probe(path)
        except OSError as exc:
            return f"{exc.strerror or exc}", total, free
        return "", total, free

    def _read_probe(self, path: str) -> None:
        entry = self.index.next_on_disk(path, self.probe_cursor.get(path, ""))
        if entry is None:
            return
        self.probe_cursor[path] = entry.key
        try:
            fd = fsutil.open_regular(path, entry.key)
        except OSError as exc:
            if exc.errno in _HARMLESS:
                return  # the next scan fixes the index; not the disk's fault
            raise
        try:
            offset = (entry.size // 2) // PROBE_BYTES * PROBE_BYTES
            os.posix_fadvise(fd, offset, PROBE_BYTES, os.POSIX_FADV_DONTNEED)
            os.pread(fd, PROBE_BYTES, offset)
        finally:
            os.close(fd)


def _write_probe(path: str) -> None:
    tmp = os.path.join(path, TMP_DIR)
    try:
        os.mkdir(tmp, 0o755)
    except FileExistsError:
        pass
    dfd = os.open(tmp, DIR_FLAGS)
    try:
        name = f".probe-{os.getpid()}"
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dfd)
        try:
            os.write(fd, b"\0" * PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.unlink(name, dir_fd=dfd)
    finally:
        os.close(dfd)
