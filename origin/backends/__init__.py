"""Storage behind the origin: one small interface, two implementations.

- LocalDirBackend: objects are files under a directory (the embedded default for one machine; what
  `origin serve` serves). Writes go to `.tmp/` and are renamed into place, so a key exists only whole.
- S3Backend: any S3 API through boto3 (AWS, MinIO, Ceph RGW via endpoint_url), retries with backoff,
  multipart uploads with parallel parts that are aborted when they fail.

Both keep each object's xxh3-128 beside it (S3 user metadata, a local xattr), so an ingest can tell
"already there" without re-reading, and both count what they upload (tests and reports use `stats`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol, Sequence

from origin.config import Location, S3Config

Progress = Callable[[int], None]  # called with bytes just transferred
HASH_METADATA = "xxh3-128"


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    xxh3: str | None  # None when the backend cannot say without reading (listings)
    etag: str
    modified_s: float


@dataclass(frozen=True)
class PutItem:
    key: str
    path: Path
    size: int
    xxh3: str
    content_type: str


@dataclass
class Stats:
    puts: int = 0
    bytes_put: int = 0
    aborted_uploads: int = 0


class Backend(Protocol):
    stats: Stats

    def describe(self) -> str: ...

    def put_files(self, items: Sequence[PutItem], progress: Progress | None = None) -> None:
        """Upload every item (in parallel where the backend can); all succeed or it raises."""

    def put_bytes(self, key: str, data: bytes, content_type: str, xxh3: str | None = None) -> None: ...

    def head(self, key: str) -> ObjectInfo | None: ...

    def has(self, key: str, size: int, xxh3: str) -> bool:
        """True when `key` holds exactly this content (size and xxh3-128)."""

    def get_bytes(self, key: str) -> bytes: ...

    def get_range(self, key: str, offset: int, length: int) -> bytes: ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...

    def delete(self, key: str) -> None: ...

    def abort_incomplete(self, prefix: str) -> int:
        """Remove what interrupted uploads under `prefix` left (multipart uploads, temp files)."""


def open_backend(location: Location, s3: S3Config | None = None) -> Backend:
    if location.is_s3:
        from origin.backends.s3 import S3Backend

        return S3Backend(location, s3 or S3Config())
    from origin.backends.local import LocalDirBackend

    assert location.path is not None
    return LocalDirBackend(location.path)
