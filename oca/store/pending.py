"""A file being written: bytes go to a temp file under <disk>/.tmp/ (same filesystem as the final
path), hashed as they are written; `commit` verifies size and hash, fsyncs, renames into place with
openat-style dir fds (never following a symlink inside the disk) and fsyncs the directory, and only
then does the store index it. A partial file is therefore never visible at the final path: a crash
leaves at most a temp file, which `Store.clean_tmp` removes (or a resumable `.part` the next
`begin_write(..., resume=True)` continues). Until commit or abort, the write's row in the index keeps
its key busy and its space booked for every process (see store.py); the row names its owner process,
and `owner_alive` tells a live owner from a dead one (gone, a zombie, or a recycled pid)."""
from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Callable

from contracts.ids import FileKey
from oca.config import DiskConfig
from oca.store.errors import HashMismatch, SizeMismatch, StoreError, from_os_error
from oca.store.fsutil import TMP_DIR, hash_fd, open_parent, write_all
from oca.store.index import FileEntry, WriteRow


def process_start(pid: int) -> int | None:
    """The start time of live process `pid` (field 22 of /proc/<pid>/stat, clock ticks since boot),
    None if there is no such process or it is a zombie; 0 where /proc can't tell (then only the pid
    is checked)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:  # no such process, or /proc hides it (hidepid) or is not mounted
        return _pid_exists(pid)
    fields = data[data.rindex(b")") + 2:].split()  # the name in (...) may hold spaces
    return None if fields[0] in (b"Z", b"X") else int(fields[19])


def _pid_exists(pid: int) -> int | None:
    if pid <= 0:  # kill(0) or kill(-n) would ask about a process group
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return 0


@functools.cache
def boot_id() -> str:
    """This boot's id ('' where the kernel doesn't say): start times restart at 0 with every boot."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def owner_alive(row: WriteRow) -> bool:
    if row.boot and boot_id() and row.boot != boot_id():
        return False  # a write of a previous boot
    start = process_start(row.pid)
    return start is not None and (start == row.pid_start or 0 in (start, row.pid_start))


class PendingFile:
    """One write in flight. Its owner (the Store) hears how it ends: `published(self, entry)` indexes a
    committed file and returns the entry as indexed; `released(self)` drops the write's booking."""

    def __init__(self, key: FileKey, disk: DiskConfig, tmp_dir_fd: int, name: str,
                 fd: int, size: int, offset: int, hasher, resumable: bool, reserved: int,
                 token: str, published: Callable[["PendingFile", FileEntry], FileEntry],
                 released: Callable[["PendingFile"], None]) -> None:
        self.key = key
        self.disk = disk
        self.name = name
        self.size = size
        self.offset = offset  # bytes already there when a resumable write began
        self.resumable = resumable
        self.reserved = reserved  # bytes of free space this write booked on its disk
        self.token = token  # names this write's row in the index's `writes` table
        self._published = published
        self._released = released
        self._tmp_dir_fd = tmp_dir_fd
        self._fd = fd
        self._hasher = hasher
        self._written = offset
        self._raw = False  # someone wrote through fileno(): the running hash can't be trusted
        self._done = False

    @property
    def path(self) -> Path:
        return Path(self.disk.path) / TMP_DIR / self.name

    @property
    def written(self) -> int:
        return self._written

    def fileno(self) -> int:
        """The temp file's fd for callers that write to it directly (splice, copy_file_range); the
        hash is then computed by re-reading the file at commit."""
        self._check_open()
        self._raw = True
        return self._fd

    def write(self, data) -> int:
        self._check_open()
        view = memoryview(data).cast("B")
        if self._written + len(view) > self.size:
            raise SizeMismatch(f"{self.key}: more than the announced {self.size} bytes")
        try:
            write_all(self._fd, view)
        except OSError as exc:
            raise from_os_error(exc, f"writing {self.key} on {self.disk.path}") from exc
        self._hasher.update(view)
        self._written += len(view)
        return len(view)

    def commit(self, expected_xxh3: str | None = None, mtime: float | None = None) -> FileEntry:
        """Publish the file and index it. `mtime` (default now) becomes Last-Modified; a move passes
        the original so validators (If-Range, caches) survive it."""
        self._check_open()
        try:
            digest = self._verify(expected_xxh3)
            mtime = time.time() if mtime is None else mtime
            os.fsync(self._fd)
            os.utime(self._fd, (mtime, mtime))
            mtime = os.fstat(self._fd).st_mtime  # as the filesystem stores it, so a scan agrees
            self._rename()
        except HashMismatch:
            self.abort(keep_partial=False)
            raise
        except StoreError:
            self.abort()
            raise
        except OSError as exc:
            self.abort()
            raise from_os_error(exc, f"publishing {self.key} on {self.disk.path}") from exc
        self._close()
        entry = FileEntry(self.key, self.disk.tier, str(self.disk.path), self.size, digest, mtime)
        return self._published(self, entry)

    def _verify(self, expected_xxh3: str | None) -> str:
        size = os.fstat(self._fd).st_size
        if size != self.size:
            raise SizeMismatch(f"{self.key}: {size} bytes written, {self.size} announced")
        digest = hash_fd(self._fd).hexdigest() if self._raw else self._hasher.hexdigest()
        if expected_xxh3 is not None and digest != expected_xxh3.lower():
            raise HashMismatch(f"{self.key}: xxh3 {digest}, expected {expected_xxh3}")
        return digest

    def _rename(self) -> None:
        parent_fd, name = open_parent(self.disk.path, self.key, create=True)
        try:
            os.rename(self.name, name, src_dir_fd=self._tmp_dir_fd, dst_dir_fd=parent_fd)
            os.fsync(parent_fd)
        finally:
            os.close(parent_fd)

    def abort(self, keep_partial: bool | None = None) -> None:
        """Give up the write. A resumable write keeps its `.part` unless `keep_partial` is False."""
        if self._done:
            return
        keep = self.resumable if keep_partial is None else keep_partial
        try:
            if not keep:
                try:
                    os.unlink(self.name, dir_fd=self._tmp_dir_fd)
                except OSError:
                    pass  # a failing disk: clean_tmp or the disk's replacement takes care of it
        finally:
            self._close()
            self._released(self)

    def _close(self) -> None:
        if not self._done:
            self._done = True
            for fd in (self._fd, self._tmp_dir_fd):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _check_open(self) -> None:
        if self._done:
            raise StoreError(f"{self.key}: write already committed or aborted")

    def __enter__(self) -> "PendingFile":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.abort()  # no-op after commit; an exception or a forgotten commit never publishes

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            self.abort()
