"""The appliance's store: the disks of an OcaConfig and the SQLite index over them. Placement
(which disk, what to evict) is decided by the pure `oca.core.placement`; this shell measures free
space, performs the verdicts and keeps the in-process bookkeeping (keys being written or moved, bytes
reserved by writes in flight) that makes those files busy for eviction and the mover.

Files live at <disk>/<key>, are written under <disk>/.tmp/ and published by rename (see pending.py).
Every path below a disk root is opened without following symlinks (see fsutil.py). A Store may be
used from several threads (the mover runs in one); open one per process."""
from __future__ import annotations

import fcntl
import os
import secrets
import threading
import time
from pathlib import Path

import xxhash

from contracts.ids import FileKey, validate_file_key
from oca.config import DiskConfig, OcaConfig, Tier
from oca.core.placement import DiskSpace, FileStat, WritePlan, heat, plan_write
from oca.store import fsutil
from oca.store.errors import (DiskFailed, NoSpace, NotFound, SizeMismatch, StoreError,
                              WriteInProgress, from_os_error)
from oca.store.fsutil import CHUNK, DIR_FLAGS, TMP_DIR, key_hash
from oca.store.health import DiskHealth, check_disks
from oca.store.index import FileEntry, Index
from oca.store.pending import PendingFile
from oca.store.scan import ScanResult, clean_tmp, scan_disk

BLOCK = 4096
SLACK_BYTES = 64 * 1024  # room kept beyond a file's blocks for directories and metadata


def space_needed(size: int) -> int:
    return -(-size // BLOCK) * BLOCK + SLACK_BYTES


class Store:
    def __init__(self, config: OcaConfig, index: Index) -> None:
        self.config = config
        self.index = index
        self.disks: dict[str, DiskConfig] = {str(d.path): d for d in config.disks}
        self._lock = threading.Lock()  # guards the bookkeeping below
        self._place_lock = threading.Lock()  # one placement (plan + reserve) at a time
        self._writing: set[str] = set()  # keys written or moved by this process
        self._reserved: dict[str, int] = {}
        self._tmp_names: set[str] = set()  # temp files of writes in flight (clean_tmp skips them)
        # A disk that was a mount point when we opened and no longer is got unmounted: its path is
        # now a directory on the root filesystem, which must not take writes.
        self._was_mount = {p: fsutil.is_mount(p) for p in self.disks}
        self._probe_cursor: dict[str, str] = {}

    @classmethod
    def open(cls, config: OcaConfig, readonly: bool = False) -> "Store":
        if config.dev:
            for d in config.disks:
                Path(d.path).mkdir(parents=True, exist_ok=True)
        store = cls(config, Index.open(config.store.index_path, readonly=readonly))
        if not readonly:
            for path in store.disks:
                try:  # mkdir, not makedirs: never recreate a vanished disk's mount point
                    os.mkdir(os.path.join(path, TMP_DIR), 0o755)
                except OSError:
                    pass  # exists, or the disk is unwell: check_disks will say
        return store

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- reading ---------------------------------------------------------------------------------

    def _disk(self, path: str) -> DiskConfig:
        try:
            return self.disks[path]
        except KeyError:
            raise NotFound(f"{path} is not a disk of this appliance") from None

    def path_of(self, entry: FileEntry) -> Path:
        """<disk>/<key>, after checking that it resolves inside the disk. For serving prefer
        `open_entry`, which also refuses a symlink swapped in after this check."""
        disk = self._disk(entry.disk)
        path = Path(disk.path) / validate_file_key(entry.key)
        root = os.path.realpath(disk.path)
        if not os.path.realpath(path).startswith(root + os.sep):
            raise NotFound(f"{entry.key}: resolves outside its disk")
        return path

    def open_entry(self, entry: FileEntry) -> int:
        """A read-only fd of the entry's file, opened without following any symlink below the disk
        root; NotFound if it is missing, not a regular file, or no longer of the indexed size."""
        disk = self._disk(entry.disk)
        try:
            fd = fsutil.open_regular(disk.path, validate_file_key(entry.key))
        except OSError as exc:
            raise from_os_error(exc, f"opening {entry.key} on {entry.disk}", reading=True) from exc
        if os.fstat(fd).st_size != entry.size:
            os.close(fd)
            raise NotFound(f"{entry.key}: changed on disk since it was indexed")
        return fd

    # --- space -----------------------------------------------------------------------------------

    def disk_spaces(self) -> list[DiskSpace]:
        """Usable space per disk now: free blocks minus the disk's reserve and our writes in flight."""
        failed = self.index.failed_disks()
        out = []
        for path, disk in self.disks.items():
            healthy = path not in failed and not (self._was_mount[path] and not fsutil.is_mount(path))
            try:
                st = os.statvfs(path)
                free = st.f_bavail * st.f_frsize
            except OSError:
                healthy, free = False, 0
            with self._lock:
                free -= disk.reserve_bytes + self._reserved.get(path, 0)
            out.append(DiskSpace(path, disk.tier, free, healthy))
        return out

    def tier_space(self, tier: Tier) -> tuple[int, int]:
        """(capacity, used) bytes over the healthy disks of `tier`."""
        failed = self.index.failed_disks()
        capacity = used = 0
        for path, disk in self.disks.items():
            if disk.tier is not tier or path in failed:
                continue
            try:
                st = os.statvfs(path)
            except OSError:
                continue
            total = st.f_blocks * st.f_frsize
            capacity += max(total - disk.reserve_bytes, 0)
            used += total - st.f_bavail * st.f_frsize
        return capacity, used

    def busy_keys(self) -> set[str]:
        with self._lock:
            return set(self._writing)

    def file_stats(self, now: float) -> list[FileStat]:
        """Every indexed file with its heat, for eviction and the mover."""
        pop = self.index.popularity(now, self.config.store.popularity_half_life_s)
        busy = self.busy_keys()
        stats = []
        for e in self.index.all():
            p = pop.get(e.key)
            stats.append(FileStat(e.key, e.tier, e.disk, e.size, heat(p.bytes, e.size) if p else 0.0,
                                  p.last_access if p else e.mtime, e.pinned, e.key in busy))
        return stats

    # --- writing ---------------------------------------------------------------------------------

    def begin_write(self, key: str, size: int, tier: Tier | None = None, *, resume: bool = False,
                    evict: bool = True, fallback: bool = True) -> PendingFile:
        """Start writing `key` (`size` bytes). The disk comes from `plan_write` (preferred tier, then
        the other one unless `fallback` is False; evicting per the configured policy if `evict`).
        `resume`: continue the key's `.part` if one is left on a healthy disk (see `.offset`)."""
        key = validate_file_key(key)
        if size < 0:
            raise ValueError("size must be >= 0")
        with self._lock:
            if key in self._writing:
                raise WriteInProgress(f"{key} is already being written")
            self._writing.add(key)
        reserved, disk = space_needed(size), None
        try:
            with self._place_lock:  # plan and reserve as one step, or two writes book the same room
                disk = self._partial_disk(key) if resume else None
                if disk is None:
                    disk = self._make_room(size, tier, evict, fallback)
                self._reserve(disk, reserved)
            name = f"{key_hash(key)}.part" if resume else \
                f"{key_hash(key)}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
            return self._open_temp(key, disk, name, size, resume, reserved)
        except BaseException:
            with self._lock:
                self._writing.discard(key)
            if disk is not None:
                self._reserve(disk, -reserved)
            raise

    def _reserve(self, disk: DiskConfig, nbytes: int) -> None:
        with self._lock:
            self._reserved[str(disk.path)] = self._reserved.get(str(disk.path), 0) + nbytes

    def _partial_disk(self, key: FileKey) -> DiskConfig | None:
        name = f"{key_hash(key)}.part"
        for space in self.disk_spaces():
            if space.healthy and os.path.isfile(os.path.join(space.path, TMP_DIR, name)):
                return self.disks[space.path]
        return None

    def _make_room(self, size: int, tier: Tier | None, evict: bool, fallback: bool) -> DiskConfig:
        need, policy = space_needed(size), self.config.store.eviction
        plan: WritePlan | None = plan_write(self.disk_spaces(), [], need, tier, policy, fallback)
        if plan is None and evict:
            stats = self.file_stats(time.time())
            plan = plan_write(self.disk_spaces(), stats, need, tier, policy, fallback)
        if plan is None:
            where = f"tier {tier.value if tier else 'any'}"
            if not any(d.healthy for d in self.disk_spaces()):
                raise DiskFailed(f"no healthy disk to write {size} bytes ({where})")
            raise NoSpace(f"no disk can take {size} bytes ({where})")
        for victim in plan.evict:
            self.remove(victim)
        return self.disks[plan.disk.path]

    def _open_temp(self, key: FileKey, disk: DiskConfig, name: str, size: int, resume: bool,
                   reserved: int) -> PendingFile:
        tmp = os.path.join(disk.path, TMP_DIR)
        fd = tmp_fd = -1
        try:
            try:
                os.mkdir(tmp, 0o755)
            except FileExistsError:
                pass
            tmp_fd = os.open(tmp, DIR_FLAGS)
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (0 if resume else os.O_EXCL)
            fd = os.open(name, flags, 0o644, dir_fd=tmp_fd)
            offset = self._resume_offset(key, fd, size) if resume else 0
            hasher = fsutil.hash_fd(fd, length=offset) if offset else xxhash.xxh3_128()
            os.lseek(fd, offset, os.SEEK_SET)
        except BaseException as exc:
            for f in (fd, tmp_fd):
                if f >= 0:
                    os.close(f)
            if isinstance(exc, OSError):
                raise from_os_error(exc, f"creating a temp file for {key} on {disk.path}") from exc
            raise
        with self._lock:
            self._tmp_names.add(name)
        return PendingFile(self, key, disk, tmp_fd, name, fd, size, offset, hasher, resume, reserved)

    @staticmethod
    def _resume_offset(key: FileKey, fd: int, size: int) -> int:
        try:  # another process continuing the same .part holds this lock
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WriteInProgress(f"{key}: its partial file is being written by another process") from None
        offset = os.fstat(fd).st_size
        if offset > size:  # not a prefix of this file: start over
            os.ftruncate(fd, 0)
            offset = 0
        return offset

    def _released(self, pending: PendingFile) -> None:
        path = str(pending.disk.path)
        with self._lock:
            self._writing.discard(pending.key)
            self._tmp_names.discard(pending.name)
            self._reserved[path] = self._reserved.get(path, 0) - pending.reserved

    def _published(self, pending: PendingFile, entry: FileEntry) -> FileEntry:
        try:
            try:
                old = self.index.get(entry.key)
                self.index.upsert(entry)
            except StoreError:
                self._unlink(entry)  # an unindexed file would hold its space forever
                raise
            if old is not None and old.disk != entry.disk:
                self._unlink(old)  # readers holding its fd keep reading it
            return self.index.get(entry.key) or entry
        finally:
            self._released(pending)

    def _unlink(self, entry: FileEntry) -> None:
        try:
            fsutil.unlink_key(entry.disk, entry.key)
        except OSError:
            pass  # a disk gone bad: its files leave the index anyway

    def put_file(self, src: Path, key: str, tier: Tier | None = None) -> FileEntry:
        """Copy a local file in, atomically (`oca put`)."""
        with open(src, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            with self.begin_write(key, size, tier) as pending:
                buf = bytearray(CHUNK)
                while n := f.readinto(buf):
                    pending.write(memoryview(buf)[:n])
                return pending.commit()

    def remove(self, key: str) -> bool:
        """Unlink the key's file and drop its entry; False if it wasn't indexed."""
        entry = self.index.get(FileKey(key))
        if entry is None:
            return False
        self._unlink(entry)
        self.index.remove(entry.key, disk=entry.disk)
        return True

    def move(self, key: str, dst_tier: Tier, rate_bps: float | None = None) -> FileEntry:
        """Copy the file to a disk of `dst_tier`, verify its hash, publish and index the copy, then
        unlink the original: a response already reading the original keeps its fd."""
        entry = self.index.get(FileKey(key))
        if entry is None:
            raise NotFound(f"{key} is not indexed")
        if entry.tier is dst_tier:
            return entry
        with self.begin_write(entry.key, entry.size, dst_tier, evict=False, fallback=False) as pending:
            src = self.open_entry(entry)
            try:
                _copy(src, pending, entry.size, rate_bps)
            finally:
                os.close(src)
            return pending.commit(expected_xxh3=entry.xxh3, mtime=entry.mtime)

    # --- maintenance (scan.py, health.py) --------------------------------------------------------

    def scan(self, disk: str | Path) -> ScanResult:
        return scan_disk(self, str(disk))

    def scan_all(self) -> dict[str, ScanResult]:
        failed = self.index.failed_disks()
        return {p: self.scan(p) for p in self.disks if p not in failed}

    def check_disks(self) -> list[DiskHealth]:
        return check_disks(self)

    def clean_tmp(self, now: float, max_age_s: float = 3600.0, part_max_age_s: float = 7 * 86400.0) -> int:
        with self._lock:
            live = set(self._tmp_names)
        return clean_tmp(self, now, max_age_s, part_max_age_s, live)


def _copy(src: int, pending: PendingFile, size: int, rate_bps: float | None) -> None:
    """Copy `size` bytes of `src` into `pending`, paced to `rate_bps` on average."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    start, done = time.monotonic(), 0
    while done < size:
        try:
            n = os.readv(src, [view[:min(CHUNK, size - done)]])
        except OSError as exc:
            raise from_os_error(exc, f"reading {pending.key} to move it") from exc
        if n == 0:
            raise SizeMismatch(f"{pending.key}: source ended after {done} of {size} bytes")
        pending.write(view[:n])
        done += n
        if rate_bps:
            ahead = done / rate_bps - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)


__all__ = ["Store", "space_needed"]
