"""The local-directory origin: object `k` is the file `root/k`.

A write goes to `root/.tmp/<pid>-<random>` (same filesystem), is fsynced, gets its xxh3-128 as the
xattr `user.xxh3-128` and is renamed into place: a reader sees no object or the whole one. Temp files
of a process that died are removed by `abort_incomplete`. Keys are contracts FileKeys (no dot
segments, no leading dots), so they never name the temp directory or escape the root.
"""
from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path
from typing import Iterator, Sequence

from contracts.ids import InvalidFileKey, validate_file_key
from origin.backends import HASH_METADATA, ObjectInfo, Progress, PutItem, Stats
from origin.core.errors import BackendError, ObjectNotFound
from origin.hashing import hash_file

_XATTR = f"user.{HASH_METADATA}"
_TMP = ".tmp"
_COPY_CHUNK = 8 << 20


class LocalDirBackend:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.stats = Stats()

    def describe(self) -> str:
        return str(self.root)

    def path_of(self, key: str) -> Path:
        try:
            return self.root / validate_file_key(key)
        except InvalidFileKey as exc:
            raise ObjectNotFound(str(exc)) from None

    def put_files(self, items: Sequence[PutItem], progress: Progress | None = None) -> None:
        for item in items:  # one disk: parallel copies would only seek more
            self._write(item.key, item.xxh3, lambda out, item=item: _copy(item.path, out, progress))

    def put_bytes(self, key: str, data: bytes, content_type: str, xxh3: str | None = None) -> None:
        self._write(key, xxh3, lambda out: _write_all(out, data))

    def _write(self, key: str, xxh3: str | None, fill) -> None:
        target = self.path_of(key)
        tmp_dir = self.root / _TMP
        tmp = tmp_dir / f"{os.getpid()}-{secrets.token_hex(6)}"
        try:
            tmp_dir.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb", buffering=0) as out:
                fill(out)
                os.fsync(out.fileno())
                size = out.tell()
            if xxh3 is not None:
                _set_hash(tmp, xxh3)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise BackendError(f"writing {key} under {self.root}: {exc.strerror or exc}") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.stats.puts += 1
        self.stats.bytes_put += size

    def head(self, key: str) -> ObjectInfo | None:
        path = self.path_of(key)
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BackendError(f"stat {key}: {exc.strerror}") from None
        if not path.is_file():
            return None
        return ObjectInfo(key, st.st_size, _get_hash(path), _etag(st), st.st_mtime)

    def has(self, key: str, size: int, xxh3: str) -> bool:
        info = self.head(key)
        if info is None or info.size != size:
            return False
        if info.xxh3 is not None:
            return info.xxh3 == xxh3
        return hash_file(self.path_of(key)) == xxh3  # a file put there by hand: read it once

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path_of(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(f"no object {key} under {self.root}") from None
        except OSError as exc:
            raise BackendError(f"reading {key}: {exc.strerror}") from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            with open(self.path_of(key), "rb") as fh:
                fh.seek(offset)
                return fh.read(length)
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(f"no object {key} under {self.root}") from None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        start = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    st = path.stat()
                    yield ObjectInfo(key, st.st_size, None, _etag(st), st.st_mtime)

    def delete(self, key: str) -> None:
        path = self.path_of(key)
        path.unlink(missing_ok=True)
        for parent in path.parents:  # drop directories the delete emptied, never the root
            if parent == self.root or not parent.is_relative_to(self.root):
                break
            try:
                parent.rmdir()
            except OSError:
                break

    def abort_incomplete(self, prefix: str) -> int:
        removed = 0
        tmp_dir = self.root / _TMP
        for tmp in tmp_dir.glob("*-*") if tmp_dir.is_dir() else ():
            pid = tmp.name.split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                tmp.unlink(missing_ok=True)
                removed += 1
        self.stats.aborted_uploads += removed
        return removed


def _copy(source: Path, out, progress: Progress | None) -> None:
    with open(source, "rb") as src:
        while True:
            try:
                n = os.copy_file_range(src.fileno(), out.fileno(), _COPY_CHUNK)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                n = _copy_chunk(src, out)
            if not n:
                return
            if progress is not None:
                progress(n)


def _copy_chunk(src, out) -> int:
    data = src.read(_COPY_CHUNK)
    _write_all(out, data)
    return len(data)


def _write_all(out, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[out.write(view):]


def _etag(st: os.stat_result) -> str:
    return f'"{st.st_size:x}-{st.st_mtime_ns:x}"'


def _set_hash(path: Path, xxh3: str) -> None:
    try:
        os.setxattr(path, _XATTR, xxh3.encode())
    except OSError:
        pass  # no user xattrs here: `has` will read the file instead


def _get_hash(path: Path) -> str | None:
    try:
        return os.getxattr(path, _XATTR).decode()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
