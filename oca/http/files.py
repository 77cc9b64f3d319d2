"""Open files of one worker: the in-memory view of the index plus an LRU of open descriptors.

Serving opens a file once and keeps the descriptor (no per-request open/stat/close). A descriptor
is reference-counted: when the index says a file moved tier, was replaced or removed, its entry
goes stale and the descriptor is closed once the last response using it ends — an unlinked file's
bytes stay readable through an open descriptor, which is how a move never breaks a response.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from email.utils import formatdate
from typing import Callable, Mapping

from contracts.ids import FileKey
from oca.core.request import FileFacts
from oca.http.accesslog import file_piece
from oca.store.index import FileEntry

def cors_headers(allow_origin: str) -> bytes:
    """Response headers that let a browser player on another origin read ranges (empty: off)."""
    if not allow_origin:
        return b""
    return (f"Access-Control-Allow-Origin: {allow_origin}\r\n"
            "Access-Control-Expose-Headers: Content-Range, Content-Length, Accept-Ranges, ETag, X-Oca-Reason\r\n"
            ).encode("latin-1")


CONTENT_TYPES = {
    ".mp4": "video/mp4", ".m4s": "video/mp4", ".m4v": "video/mp4", ".m4a": "audio/mp4",
    ".ts": "video/mp2t", ".aac": "audio/aac", ".webm": "video/webm", ".mkv": "video/x-matroska",
    ".m3u8": "application/vnd.apple.mpegurl", ".mpd": "application/dash+xml",
    ".jpg": "image/jpeg", ".png": "image/png", ".vtt": "text/vtt", ".json": "application/json",
}
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | getattr(os, "O_NOATIME", 0)


def content_type_for(key: str) -> str:
    dot = key.rfind(".")
    return CONTENT_TYPES.get(key[dot:].lower(), "application/octet-stream") if dot >= 0 else "application/octet-stream"


class OpenFile:
    __slots__ = ("key", "entry", "fd", "refs", "stale", "facts", "content_type", "static_headers", "tier", "type_line",
                 "log_piece", "head_date", "head_206", "range_tail")

    def __init__(self, key: FileKey, entry: FileEntry, fd: int, cache_control: str, cors: bytes = b"") -> None:
        self.key = key
        self.entry = entry
        self.fd = fd
        self.refs = 0
        self.stale = False
        self.content_type = content_type_for(key)
        self.type_line = f"Content-Type: {self.content_type}\r\n".encode("latin-1")
        self.tier = entry.tier.value  # an enum's .value is a slow descriptor: read it once
        self.log_piece = file_piece(key, self.tier)  # its part of every JSON access-log line
        last_modified = formatdate(entry.mtime, usegmt=True)
        self.facts = FileFacts(size=entry.size, etag=f'"{entry.xxh3}"', last_modified=int(entry.mtime))
        # Headers identical on every response of this file, encoded once.
        self.static_headers = (
            f"Accept-Ranges: bytes\r\nETag: {self.facts.etag}\r\nLast-Modified: {last_modified}\r\n"
            f"Cache-Control: {cache_control}\r\n"
        ).encode("latin-1") + cors
        # A single-range 206 head is `head_206`, its numbers, `range_tail`: the first is remade when
        # the Date header changes (once a second), the last never (see writer.range_head).
        self.head_date = b""
        self.head_206 = b""
        self.range_tail = b"/%d\r\n%s\r\n" % (entry.size, self.static_headers)

    def release(self) -> None:
        self.refs -= 1
        if self.stale and self.refs == 0:
            _close(self.fd)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


class FileOpenError(Exception):
    def __init__(self, entry: FileEntry, error: OSError) -> None:
        super().__init__(f"{entry.disk}: cannot open {entry.key}: {error}")
        self.entry = entry
        self.error = error


DEFAULT_OPEN_FILES = 2048  # descriptors of files kept open per worker (no open() per request)


class OpenFiles:
    def __init__(self, entries: Mapping[FileKey, FileEntry], cache_control: str, capacity: int = DEFAULT_OPEN_FILES,
                 cors: bytes = b"") -> None:
        self.cors = cors
        self.entries: dict[FileKey, FileEntry] = dict(entries)
        self._open: OrderedDict[FileKey, OpenFile] = OrderedDict()  # emptied in place, never replaced
        # `open_file(key) -> OpenFile | None`: the file if it is open already (the hot path never
        # opens); changes evict entries here, so whatever is found is current. The dict's own lookup,
        # without a Python frame around it: it runs per request.
        self.open_file: Callable[[FileKey], OpenFile | None] = self._open.get
        self._cache_control = cache_control
        self._capacity = capacity
        self._disk_roots: dict[str, str] = {}

    def acquire_key(self, key: FileKey) -> OpenFile | None:
        """The open file for `key` if the index holds it (the caller must `release()` it)."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        of = self._open.get(key)
        if of is None or of.entry is not entry:
            of = self._open_new(key, entry)
        of.refs += 1
        return of

    def _open_new(self, key: FileKey, entry: FileEntry) -> OpenFile:
        path = os.path.join(entry.disk, key)
        try:
            fd = os.open(path, _OPEN_FLAGS)
            # Key grammar forbids '..'; this also refuses a directory symlinked out of the disk.
            real = os.path.realpath(path)
            root = self._disk_roots.get(entry.disk) or self._disk_roots.setdefault(
                entry.disk, os.path.realpath(entry.disk) + os.sep)
            if not real.startswith(root):
                os.close(fd)
                raise OSError(13, "resolves outside its disk")
        except OSError as exc:
            raise FileOpenError(entry, exc) from None
        self._retire(self._open.pop(key, None))
        of = OpenFile(key, entry, fd, self._cache_control, self.cors)
        self._open[key] = of
        while len(self._open) > self._capacity:
            self._retire(self._open.popitem(last=False)[1])
        return of

    @staticmethod
    def _retire(of: OpenFile | None) -> None:
        if of is None or of.stale:
            return
        of.stale = True
        if of.refs == 0:
            _close(of.fd)

    def apply_changes(self, changes: Mapping[FileKey, FileEntry | None]) -> None:
        for key, entry in changes.items():
            if entry is None:
                self.entries.pop(key, None)
            else:
                self.entries[key] = entry
            self._retire(self._open.pop(key, None))

    def replace_all(self, entries: Mapping[FileKey, FileEntry]) -> None:
        self.apply_changes({k: None for k in self.entries.keys() - entries.keys()})
        self.apply_changes({k: e for k, e in entries.items() if self.entries.get(k) != e})

    def drop_disk(self, disk: str) -> list[FileKey]:
        """Forget every file of a failed disk at once, before the index catches up."""
        gone = [k for k, e in self.entries.items() if e.disk == disk]
        self.apply_changes({k: None for k in gone})
        return gone

    def close_all(self) -> None:
        for of in self._open.values():
            self._retire(of)
        self._open.clear()

