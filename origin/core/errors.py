"""The origin's errors: one hierarchy, each with the HTTP status a shell would answer and the exit code
the CLI returns. Pure, so core modules raise them too. A malformed catalog entry or title metadata is
the catalog contract's `contracts.catalog.CatalogError` (same two attributes), shared with its readers."""
from __future__ import annotations


class OriginError(Exception):
    status_hint = 500
    exit_code = 1


class UsageError(OriginError):
    """Bad metadata or arguments from the caller (title id, release date, languages)."""

    status_hint = 400
    exit_code = 2


class SourceError(OriginError):
    """The source (or a pre-encoded rendition) is corrupt or of a kind the origin does not take."""

    status_hint = 422
    exit_code = 2


class MediaError(SourceError):
    """An MP4 file's boxes are malformed or not laid out as a single-file fragmented rendition."""


class EncodeError(OriginError):
    """ffmpeg failed on a source it could read (the message carries the tail of its log)."""


class ToolMissing(OriginError):
    exit_code = 2


class BackendError(OriginError):
    """The storage failed after its retries (S3 5xx/throttling past max_attempts, disk full, ...)."""

    status_hint = 502


class ObjectNotFound(BackendError):
    status_hint = 404


class TitleNotFound(OriginError):
    status_hint = 404
