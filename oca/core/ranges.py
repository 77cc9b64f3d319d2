"""Byte ranges (RFC 9110 §14), decided purely: header text and file facts in, a verdict out.

Where the RFC leaves a choice we answer as nginx does, so the appliance is a drop-in for it:
- a Range header whose unit is not `bytes` is ignored (200); a syntactically invalid `bytes=` set is
  refused with 416 (RFC 9110 §14.2 lets a server ignore it instead; nginx refuses, so do we);
- `a-b` with `b` past the end is clamped; `-n` takes the last n bytes (all of them when n >= size);
- ranges that start past the end are dropped; when none is left: 416 with `bytes */SIZE` (`-0`
  included); an empty file ignores every range (200);
- several ranges become one multipart/byteranges 206, in the order asked, unless together they ask
  for more bytes than the file has (overlap abuse) or more than `max_ranges` ranges: then 200 whole;
- `If-Range` (§13.1.5): an entity tag must equal our strong ETag exactly, a date must equal
  Last-Modified exactly; anything else sends the whole file (200).
"""
from __future__ import annotations

from dataclasses import dataclass

MAX_RANGES = 32


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


@dataclass(frozen=True, slots=True)
class Whole:
    """Send the whole representation with 200."""

    reason: str


@dataclass(frozen=True, slots=True)
class Partial:
    """Send these ranges with 206: one range plainly, several as multipart/byteranges."""

    ranges: tuple[ByteRange, ...]


@dataclass(frozen=True, slots=True)
class Unsatisfiable:
    """416 with `Content-Range: bytes */size`."""

    size: int


RangeVerdict = Whole | Partial | Unsatisfiable

NO_RANGE = Whole("no range")
_DIGITS = frozenset("0123456789")


def parse_range(header: str | None, size: int, max_ranges: int = MAX_RANGES) -> RangeVerdict:
    """Decide what a `Range` header asks of a representation of `size` bytes."""
    if header is None:
        return NO_RANGE
    header = header.strip(" \t")
    if len(header) < 6 or header[:6].lower() != "bytes=":
        return Whole("not a bytes range")
    if size == 0:
        return Whole("empty representation")
    ranges: list[ByteRange] = []
    total = 0
    for spec in header[6:].split(","):
        parsed = _parse_spec(spec.strip(" "), size)
        if parsed is None:
            return Unsatisfiable(size)
        if parsed.end > parsed.start:
            ranges.append(parsed)
            total += parsed.length
            if len(ranges) > max_ranges:
                return Whole("too many ranges")
    if not ranges:
        return Unsatisfiable(size)
    if total > size:
        return Whole("ranges overlap beyond the representation")
    return Partial(tuple(ranges))


def _parse_spec(spec: str, size: int) -> ByteRange | None:
    """One `a-b`, `a-` or `-n` (spaces allowed around the dash); None when malformed."""
    first, dash, last = spec.partition("-")
    first, last = first.rstrip(" "), last.lstrip(" ")
    if not dash:
        return None
    if first == "":  # suffix: the last n bytes
        if not _is_number(last):
            return None
        return ByteRange(max(size - int(last), 0), size)
    if not _is_number(first) or (last != "" and not _is_number(last)):
        return None
    start = int(first)
    if last == "":
        return ByteRange(start, max(size, start))
    if int(last) < start:
        return ByteRange(start, start)  # dropped, as one starting past the end is
    return ByteRange(start, min(int(last) + 1, size) if start < size else start)


_MAX_OFFSET = 2**63 - 1  # nginx refuses numbers past off_t


def _is_number(text: str) -> bool:
    return bool(text) and all(c in _DIGITS for c in text) and len(text) <= 19 and int(text) <= _MAX_OFFSET


def if_range_matches(if_range: str | None, etag: str, last_modified: str) -> bool:
    """True when the ranges may be served: no If-Range, or it names our current representation."""
    if if_range is None:
        return True
    value = if_range.strip(" \t")
    if value.endswith('"'):
        return value == etag  # a weak tag never equals our strong one
    return value == last_modified


def decide(
    range_header: str | None,
    if_range: str | None,
    size: int,
    etag: str,
    last_modified: str,
    max_ranges: int = MAX_RANGES,
) -> RangeVerdict:
    if range_header is None:
        return NO_RANGE
    if not if_range_matches(if_range, etag, last_modified):
        return Whole("If-Range does not match")
    return parse_range(range_header, size, max_ranges)


@dataclass(frozen=True, slots=True)
class MultipartLayout:
    """The framing of a multipart/byteranges body: part heads interleave with the ranges' bytes."""

    content_type: str
    heads: tuple[bytes, ...]
    tail: bytes
    length: int


def multipart_layout(ranges: tuple[ByteRange, ...], size: int, part_type: str, boundary: str) -> MultipartLayout:
    heads = tuple(
        (f"\r\n--{boundary}\r\nContent-Type: {part_type}\r\n"
         f"Content-Range: {r.content_range(size)}\r\n\r\n").encode("latin-1")
        for r in ranges
    )
    tail = f"\r\n--{boundary}--\r\n".encode("latin-1")
    length = sum(len(h) for h in heads) + sum(r.length for r in ranges) + len(tail)
    return MultipartLayout(f"multipart/byteranges; boundary={boundary}", heads, tail, length)
