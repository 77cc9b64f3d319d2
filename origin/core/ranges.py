"""Range requests (RFC 9110 §14) as verdicts: `parse_range(header, size)` says which bytes to send.

The origin serves one range at a time, as the appliances ask for it; a request for several ranges is
answered with the whole file (§14.2 lets a server ignore Range), so no multipart/byteranges here.

- `bytes=a-b`, `bytes=a-`, `bytes=-n` (§14.1.2); `b` past the end is clamped to the last byte.
- A first-pos at or past the end, or a suffix of 0 (or any suffix of an empty file) → 416 with
  `Content-Range: bytes */SIZE` (§14.4, §15.5.17).
- A syntactically invalid header, another unit, or `b < a` → ignore it and send 200 (§14.2).
- `If-Range` (§13.1.5) decides between 206 and 200: a strong ETag compared strongly, or an HTTP-date
  equal to Last-Modified; anything else sends the whole file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

_SPEC = re.compile(r"(\d*)-(\d*)")
_MAX_DIGITS = 19  # beyond int64: first-pos is past any file; treat as syntax we do not take


@dataclass(frozen=True)
class Satisfiable:
    start: int
    end: int  # inclusive, already clamped to size - 1

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


@dataclass(frozen=True)
class Unsatisfiable:
    size: int

    def content_range(self) -> str:
        return f"bytes */{self.size}"


@dataclass(frozen=True)
class Ignore:
    reason: str


RangeVerdict = Satisfiable | Unsatisfiable | Ignore


def parse_range(header: str | None, size: int) -> RangeVerdict:
    """The verdict for a Range header against a representation of `size` bytes."""
    if header is None:
        return Ignore("no Range header")
    unit, sep, range_set = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return Ignore("not a bytes range")
    specs = [s.strip() for s in range_set.split(",") if s.strip()]  # list syntax allows empty items
    if not specs:
        return Ignore("empty range set")
    if len(specs) > 1:
        return Ignore("several ranges: served whole")
    match = _SPEC.fullmatch(specs[0])
    if match is None:
        return Ignore("malformed range")
    first, last = match.groups()
    if len(first) > _MAX_DIGITS or len(last) > _MAX_DIGITS:
        return Ignore("range number too long")
    if not first:
        return _suffix(last, size)
    start = int(first)
    if last and int(last) < start:
        return Ignore("last-pos before first-pos")
    if start >= size:
        return Unsatisfiable(size)
    end = min(int(last), size - 1) if last else size - 1
    return Satisfiable(start, end)


def _suffix(last: str, size: int) -> RangeVerdict:
    if not last:
        return Ignore("range without positions")
    length = int(last)
    if length == 0 or size == 0:
        return Unsatisfiable(size)
    return Satisfiable(max(0, size - length), size - 1)


def if_range_allows(if_range: str | None, etag: str, last_modified_s: int) -> bool:
    """True when a Range may be honoured: no If-Range, or its validator still matches (§13.1.5)."""
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith('"'):
        return value == etag and not etag.startswith("W/")
    if value.startswith("W/"):
        return False  # a weak tag never matches in If-Range
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return False
    return when is not None and int(when.timestamp()) == last_modified_s
