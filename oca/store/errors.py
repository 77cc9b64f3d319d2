"""Errors of the appliance store. Each carries the HTTP status the shell should answer with; only the
HTTP server turns them into responses."""
from __future__ import annotations

import errno


class StoreError(Exception):
    status_hint = 500


class NotFound(StoreError):
    status_hint = 404


class HashMismatch(StoreError):
    """The bytes written don't hash to what the source promised (or what the index recorded)."""
    status_hint = 502


class SizeMismatch(StoreError):
    status_hint = 502


class NoSpace(StoreError):
    status_hint = 507


class DiskFailed(StoreError):
    status_hint = 503


class WriteInProgress(StoreError):
    """The same key is already being written (or moved) by this or another process."""
    status_hint = 409


class KeyConflict(StoreError):
    """The key collides with the tree on disk: a directory where the file goes, or a file where a
    directory of the key's path must be."""
    status_hint = 409


class IndexUnavailable(StoreError):
    """The SQLite index stayed locked beyond busy_timeout, or is read-only for this process."""
    status_hint = 503


_NOT_A_FILE = (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.EISDIR)


def from_os_error(exc: OSError, what: str, reading: bool = False) -> StoreError:
    """Classify an OSError met while touching a disk. When `reading`, anything that means "no regular
    file there" (a directory, a symlink, a file where a directory should be) is NotFound."""
    code = exc.errno
    if reading and code in _NOT_A_FILE:
        return NotFound(f"{what}: {exc.strerror}")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(f"{what}: {exc.strerror}")
    if code in (errno.ENOENT, errno.ELOOP):
        return NotFound(f"{what}: {exc.strerror}")
    if code in (errno.ENOTDIR, errno.EISDIR, errno.EEXIST):
        return KeyConflict(f"{what}: {exc.strerror}")
    if code in (errno.EIO, errno.EROFS, errno.ENXIO, errno.ENODEV, errno.ESTALE):
        return DiskFailed(f"{what}: {exc.strerror}")
    return StoreError(f"{what}: {exc.strerror or exc}")
