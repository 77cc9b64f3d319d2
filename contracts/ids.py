"""Typed ids shared by every service. A FileKey is also a relative path inside an appliance's cache,
so its grammar is strict: see `validate_file_key`."""
from __future__ import annotations

import re
from typing import NewType

FileKey = NewType("FileKey", str)
ApplianceId = NewType("ApplianceId", str)
SiteId = NewType("SiteId", str)
KeyId = NewType("KeyId", str)

IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")  # appliance, site and key ids on the wire
MAX_FILE_KEY_LEN = 512
# Segments of letters, digits, dot, dash, underscore; no empty, "." or ".." segment; no leading dot
# (hides temp files and dot-dirs of the store). No percent signs: a key has exactly one spelling.
_SEGMENT = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,254}")
FILE_KEY_PATTERN = _KEY = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,254}(?:/[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,254})*")


class InvalidFileKey(ValueError):
    status_hint = 400


def validate_file_key(raw: str) -> FileKey:
    """Return `raw` as a FileKey, or raise InvalidFileKey saying why."""
    if len(raw) <= MAX_FILE_KEY_LEN and _KEY.fullmatch(raw):  # one regex on the hot path
        return FileKey(raw)
    if not raw:
        raise InvalidFileKey("empty file key")
    if len(raw) > MAX_FILE_KEY_LEN:
        raise InvalidFileKey(f"file key longer than {MAX_FILE_KEY_LEN} characters")
    for segment in raw.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidFileKey(f"file key has an empty, '.' or '..' segment: {raw!r}")
        if not _SEGMENT.fullmatch(segment):
            raise InvalidFileKey(f"file key segment {segment!r} has a character outside [A-Za-z0-9._-]")
    return FileKey(raw)


def is_valid_file_key(raw: str) -> bool:
    try:
        validate_file_key(raw)
    except InvalidFileKey:
        return False
    return True
