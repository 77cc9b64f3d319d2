"""The appliance's store: the disks of an OcaConfig and the SQLite index over them. Placement
(which disk, what to evict) is decided by the pure `oca.core.placement`; this shell measures free
space and performs the verdicts.

Several processes write the same disks (the supervisor's mover and scrub, `oca fill`, `oca put`,
pull-through in every serving worker), so the bookkeeping of writes in flight lives in the index's
`writes` table, one row per write or move (`WriteRow`): its key is busy (a second writer gets
WriteInProgress; eviction, the mover, scans and the scrub leave it alone), its disk has `reserved`
bytes booked (less what its temp file already holds), and its temp file is not clean_tmp's to take.
Planning a disk and booking it is one step for all processes: the `<index>.place.lock` flock (and a
thread lock, since flock is per open file, not per thread) is held from reading free space to
inserting the row. A row whose owner died (its pid gone, a zombie, or started at another time: a
recycled pid) is stale: whoever meets it reaps it and unlinks its `.tmp`; a `.part` stays to be
resumed. Serving never reads this table.

Files live at <disk>/<key>, are written under <disk>/.tmp/ and published by rename (see pending.py).
Every path below a disk root is opened without following symlinks (see fsutil.py). A Store may be
used from several threads (the mover runs in one); open one per process."""
from __future__ import annotations

import fcntl
import os
import secrets
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import xxhash

from contracts.ids import FileKey, validate_file_key
from oca.config import DiskConfig, OcaConfig, Tier
from oca.core.placement import DiskSpace, FileStat, WritePlan, heat, plan_write
from oca.store import fsutil
from oca.store.errors import (DiskFailed, IndexUnavailable, NoSpace, NotFound, SizeMismatch,
                              StoreError, WriteInProgress, from_os_error)
from oca.store.fsutil import CHUNK, DIR_FLAGS, TMP_DIR, key_hash
from oca.store.health import DiskChecker, DiskHealth
from oca.store.index import FileEntry, Index, WriteRow
from oca.store.pending import PendingFile, boot_id, owner_alive, process_start
from oca.store.scan import ScanResult, clean_tmp, scan_disk

BLOCK = 4096
SLACK_BYTES = 64 * 1024  # room kept beyond a file's blocks for directories and metadata
PLACE_LOCK_TIMEOUT_S = 30.0  # a placement takes milliseconds; a holder this slow is stuck


def space_needed(size: int) -> int:
    return -(-size // BLOCK) * BLOCK + SLACK_BYTES


class Store:
    def __init__(self, config: OcaConfig, index: Index) -> None:
        self.config = config
        self.index = index
        self.disks: dict[str, DiskConfig] = {str(d.path): d for d in config.disks}
        # Writes in flight are rows of the index (see the module's docstring); this process keeps
        # only the placement lock and the rows it failed to drop (the index was locked), to retry.
        self._place_lock = threading.Lock()  # the threads of this process, before the flock
        self._place_path = Path(f"{index.path}.place.lock")
        self._place_fd = -1  # opened at the first placement
        self._lock = threading.Lock()  # guards _unreleased
        self._unreleased: list[tuple[str, str]] = []  # (key, token) of our rows still to drop
        self._me: tuple[int, int, str] = (0, 0, "")  # (pid, start time, boot id), again after a fork
        # A disk that was a mount point when we opened and no longer is got unmounted: its path is
        # now a directory on the root filesystem, which must not take writes.
        self._was_mount = {p: fsutil.is_mount(p) for p in self.disks}
        self._checker = DiskChecker(index, self.disks, self._was_mount)

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
        if self._place_fd >= 0:
            os.close(self._place_fd)
            self._place_fd = -1
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

    def disk_spaces(self, writes: list[WriteRow] | None = None) -> list[DiskSpace]:
        """Usable space per disk now: free blocks minus the disk's reserve and what the writes in
        flight of every process (`writes`, default: read now) have booked but not yet written."""
        failed = self.index.failed_disks()
        booked = _booked(self.live_writes() if writes is None else writes)
        out = []
        for path, disk in self.disks.items():
            healthy = path not in failed and not (self._was_mount[path] and not fsutil.is_mount(path))
            try:
                st = os.statvfs(path)
                free = st.f_bavail * st.f_frsize
            except OSError:
                healthy, free = False, 0
            free -= disk.reserve_bytes + booked.get(path, 0)
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

    # --- writes in flight, of every process -------------------------------------------------------

    def live_writes(self) -> list[WriteRow]:
        """The writes and moves in flight now, of every process; dead owners' rows are reaped."""
        return self._sweep_writes()[0]

    def _sweep_writes(self) -> tuple[list[WriteRow], int]:
        """(live writes, temp files of dead ones unlinked)."""
        self._retry_releases()
        rows = self.index.writes()
        dead = [r for r in rows if not owner_alive(r)]
        if not dead:
            return rows, 0
        gone = {r.token for r in dead}
        return [r for r in rows if r.token not in gone], self._reap(dead)

    def busy_keys(self) -> set[str]:
        """Keys being written or moved by any process: never evicted, moved, scrubbed or unscanned."""
        return {r.key for r in self.live_writes()}

    def is_busy(self, key: str) -> bool:
        return key in self.busy_keys()

    def _reap(self, dead: list[WriteRow]) -> int:
        """Drop dead writers' rows and unlink their `.tmp` files (nobody can finish them); a `.part`
        is kept for the next resumable write of its key. Returns the files unlinked."""
        try:
            self.index.end_writes((r.key, r.token) for r in dead)
        except StoreError:
            return 0  # a read-only or locked index: the next caller reaps them
        unlinked = 0
        for r in dead:
            if r.tmp.endswith(".tmp") and "/" not in r.tmp and r.disk in self.disks:
                try:
                    os.unlink(os.path.join(r.disk, TMP_DIR, r.tmp))
                    unlinked += 1
                except OSError:
                    pass  # never created, or its disk is unwell: clean_tmp's age rule takes it
        return unlinked

    def _owner(self) -> tuple[int, int, str]:
        pid = os.getpid()
        if self._me[0] != pid:
            self._me = (pid, process_start(pid) or 0, boot_id())
        return self._me

    @contextmanager
    def _placing(self) -> Iterator[None]:
        """Hold the placement lock of every process of this appliance (and of this one's threads)."""
        with self._place_lock:
            if self._place_fd < 0:
                try:
                    self._place_fd = os.open(self._place_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                except OSError as exc:
                    raise IndexUnavailable(f"{self._place_path}: {exc.strerror}") from exc
            _flock(self._place_fd, self._place_path)
            try:
                yield
            finally:
                fcntl.flock(self._place_fd, fcntl.LOCK_UN)

    def _release(self, key: str, token: str) -> None:
        try:
            self.index.end_writes([(key, token)])
        except StoreError:  # the index stayed locked: keep trying, or the key stays busy for good
            with self._lock:
                self._unreleased.append((key, token))

    def _retry_releases(self) -> None:
        with self._lock:
            pending, self._unreleased = self._unreleased, []
        if pending:
            try:
                self.index.end_writes(pending)
            except StoreError:
                with self._lock:
                    self._unreleased.extend(pending)

    def file_stats(self, now: float, busy: set[str] | None = None) -> list[FileStat]:
        """Every indexed file with its heat, for eviction and the mover. `busy`: the busy keys, if
        the caller has them already."""
        pop = self.index.popularity(now, self.config.store.popularity_half_life_s)
        busy = self.busy_keys() if busy is None else busy
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
        name = f"{key_hash(key)}.part" if resume else \
            f"{key_hash(key)}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        with self._placing():  # plan and book as one step, or two writers book the same room
            row = self._claim(key, size, name, tier, resume, evict, fallback)
        try:
            return self._open_temp(key, self.disks[row.disk], name, size, resume, row)
        except BaseException:
            self._release(row.key, row.token)
            raise

    def _claim(self, key: FileKey, size: int, name: str, tier: Tier | None, resume: bool, evict: bool,
               fallback: bool) -> WriteRow:
        """Under the placement lock: refuse a key busy in any process, pick (and make room on) a disk,
        insert this write's row."""
        writes = self.live_writes()
        if any(w.key == key for w in writes):
            raise WriteInProgress(f"{key} is already being written")
        spaces = self.disk_spaces(writes)
        disk = self._partial_disk(key, spaces) if resume else None
        if disk is None:
            busy = {w.key for w in writes} | {key}  # its current copy stays while it is rewritten
            disk = self._make_room(size, tier, evict, fallback, spaces, busy)
        row = WriteRow(key, str(disk.path), space_needed(size), name, *self._owner(), secrets.token_hex(8),
                       time.time())
        if not self.index.add_write(row):
            raise WriteInProgress(f"{key} is already being written")
        return row

    def _partial_disk(self, key: FileKey, spaces: list[DiskSpace]) -> DiskConfig | None:
        name = f"{key_hash(key)}.part"
        for space in spaces:
            if space.healthy and os.path.isfile(os.path.join(space.path, TMP_DIR, name)):
                return self.disks[space.path]
        return None

    def _make_room(self, size: int, tier: Tier | None, evict: bool, fallback: bool,
                   spaces: list[DiskSpace], busy: set[str]) -> DiskConfig:
        need, policy = space_needed(size), self.config.store.eviction
        plan: WritePlan | None = plan_write(spaces, [], need, tier, policy, fallback)
        if plan is None and evict:
            plan = plan_write(spaces, self.file_stats(time.time(), busy), need, tier, policy, fallback)
        if plan is None:
            where = f"tier {tier.value if tier else 'any'}"
            if not any(d.healthy for d in spaces):
                raise DiskFailed(f"no healthy disk to write {size} bytes ({where})")
            raise NoSpace(f"no disk can take {size} bytes ({where})")
        for victim in plan.evict:  # under the placement lock already; victims are never busy
            self._remove(victim)
        return self.disks[plan.disk.path]

    def _open_temp(self, key: FileKey, disk: DiskConfig, name: str, size: int, resume: bool,
                   row: WriteRow) -> PendingFile:
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
        return PendingFile(key, disk, tmp_fd, name, fd, size, offset, hasher, resume, row.reserved,
                           row.token, published=self._published, released=self._released)

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
        self._release(pending.key, pending.token)

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
        """Unlink the key's file and drop its entry; False if it wasn't indexed. A key some process is
        writing or moving is not removed (WriteInProgress): its writer would publish it again, so the
        caller (fill's deletions, the scrub) tries on its next round."""
        with self._placing():
            if any(w.key == key for w in self.live_writes()):
                raise WriteInProgress(f"{key}: being written or moved; removal waits for the next round")
            return self._remove(key)

    def _remove(self, key: str) -> bool:
        entry = self.index.get(FileKey(key))
        if entry is None:
            return False
        self._unlink(entry)
        self.index.remove(entry.key, disk=entry.disk)
        return True

    def move(self, key: str, dst_tier: Tier, rate_bps: float | None = None) -> FileEntry:
        """Copy the file to a disk of `dst_tier`, verify its hash, publish and index the copy, then
        unlink the original: a response already reading the original keeps its fd. The key is busy
        for every process meanwhile (its row in `writes`), like any write."""
        entry = self.index.get(FileKey(key))
        if entry is None:
            raise NotFound(f"{key} is not indexed")
        if entry.tier is dst_tier:
            return entry
        with self.begin_write(entry.key, entry.size, dst_tier, evict=False, fallback=False) as pending:
            if self.index.get(entry.key) != entry:  # rewritten or removed before we held the key
                raise NotFound(f"{key}: changed since the move was planned")
            src = self.open_entry(entry)
            try:
                _copy(src, pending, entry.size, rate_bps)
            finally:
                os.close(src)
            return pending.commit(expected_xxh3=entry.xxh3, mtime=entry.mtime)

    # --- maintenance (scan.py, health.py) --------------------------------------------------------

    def scan(self, disk: str | Path) -> ScanResult:
        config = self.disks.get(str(disk))
        if config is None:
            raise DiskFailed(f"{disk} is not a disk of this appliance")
        return scan_disk(self.index, config, self.busy_keys)

    def scan_all(self) -> dict[str, ScanResult]:
        failed = self.index.failed_disks()
        return {p: self.scan(p) for p in self.disks if p not in failed}

    def check_disks(self) -> list[DiskHealth]:
        return self._checker.check(self.scan)

    def clean_tmp(self, now: float, max_age_s: float = 3600.0, part_max_age_s: float = 7 * 86400.0) -> int:
        """Sweep the disks' temp directories (see scan.clean_tmp): dead writers' `.tmp` files go at
        once, files no live write names go by age. Cheap (a few directory entries per disk); the
        sweep holds the placement lock, so a write can't name a file between our look and our unlink.
        Returns the files removed."""
        with self._placing():
            writes, removed = self._sweep_writes()
            failed = self.index.failed_disks()
            disks = [d for d in self.disks if d not in failed]
            return removed + clean_tmp(disks, now, max_age_s, part_max_age_s, {w.tmp for w in writes})


def _booked(writes: Iterable[WriteRow]) -> dict[str, int]:
    """Per disk, the bytes writes in flight booked and have not written yet: a temp file's blocks
    already count in the disk's free space."""
    out: dict[str, int] = {}
    for w in writes:
        try:
            held = os.stat(os.path.join(w.disk, TMP_DIR, w.tmp), follow_symlinks=False).st_blocks * 512
        except OSError:
            held = 0  # not created yet (or published already): the whole booking stands
        out[w.disk] = out.get(w.disk, 0) + max(w.reserved - held, 0)
    return out


def _flock(fd: int, path: Path) -> None:
    """flock(LOCK_EX), waiting at most PLACE_LOCK_TIMEOUT_S: a stuck holder makes writes fail (503),
    not hang."""
    deadline, pause = time.monotonic() + PLACE_LOCK_TIMEOUT_S, 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise IndexUnavailable(f"{path}: held by another process for "
                                       f"{PLACE_LOCK_TIMEOUT_S:.0f} s") from None
            time.sleep(pause)
            pause = min(pause * 2, 0.05)


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
