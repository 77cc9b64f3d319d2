"""Filesystem primitives of the store, relative to a disk root and never following a symlink inside
it: a FileKey is walked one segment at a time with openat(O_NOFOLLOW), so a symlink planted in a disk
(dev mode lets users drop files into it) can't make us read, write or unlink outside the disk. The
disk root itself comes from the operator's config and may be a symlink."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import xxhash

CHUNK = 1 << 20
TMP_DIR = ".tmp"
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def key_hash(key: str) -> str:
    return xxhash.xxh3_128_hexdigest(key.encode())


def open_root(root: str | Path) -> int:
    return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def open_parent(root: str | Path, key: str, create: bool = False) -> tuple[int, str]:
    """An fd of the directory that holds `key` and the key's last segment. With `create`, missing
    directories are made (and their parents fsynced, so the new entries survive a crash)."""
    *dirs, name = key.split("/")
    fd = open_root(root)
    try:
        for part in dirs:
            if create:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    os.fsync(fd)
                except FileExistsError:
                    pass
            child = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd, name


def open_regular(root: str | Path, key: str) -> int:
    """A read-only fd of the regular file `key` under `root`; ELOOP for a symlink anywhere on the
    way, EISDIR/ENOENT-like errors for anything that isn't a regular file."""
    dfd, name = open_parent(root, key)
    try:
        fd = os.open(name, READ_FLAGS, dir_fd=dfd)
    finally:
        os.close(dfd)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IsADirectoryError(21, "not a regular file", key)  # EISDIR
    return fd


def unlink_key(root: str | Path, key: str) -> bool:
    """Remove `key`'s file; False if it was already gone."""
    try:
        dfd, name = open_parent(root, key)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        os.unlink(name, dir_fd=dfd)
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(dfd)


def write_all(fd: int, data) -> int:
    view = memoryview(data).cast("B")
    total = len(view)
    while view:
        n = os.write(fd, view)
        view = view[n:]
    return total


def hash_fd(fd: int, hasher=None, start: int = 0, length: int | None = None):
    """Feed `length` bytes (default: to EOF) of `fd` from `start` to an xxh3-128 hasher, in 1 MiB
    preads (the fd's offset is left alone)."""
    hasher = hasher or xxhash.xxh3_128()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    pos, left = start, length
    while left is None or left > 0:
        want = CHUNK if left is None else min(CHUNK, left)
        n = os.preadv(fd, [view[:want]], pos)
        if n == 0:
            break
        hasher.update(view[:n])
        pos += n
        if left is not None:
            left -= n
    return hasher


def hash_file(root: str | Path, key: str) -> tuple[str, os.stat_result]:
    fd = open_regular(root, key)
    try:
        st = os.fstat(fd)
        return hash_fd(fd).hexdigest(), st
    finally:
        os.close(fd)


def is_mount(path: str | Path) -> bool:
    """A mount point sits on another device than its parent (or is the root)."""
    try:
        st, parent = os.stat(path), os.stat(os.path.join(path, ".."))
    except OSError:
        return False
    return st.st_dev != parent.st_dev or st.st_ino == parent.st_ino
