"""Byte ranges (RFC 9110 §14), decided purely: header text and file facts in, a verdict out.

The one Range parser: the appliance (oca.core.request, oca.http) and `origin serve` both answer with
it, so an appliance filling from the origin and a player reading from an appliance meet the same
semantics. `decide(range, if_range, size, etag, last_modified)` is the whole decision; `parse_range`
the Range header alone; `multipart_layout` the framing of a several-range 206. `single_range` is the
appliance's hot path's shortcut for the one case players send on every segment (one plain range,
lower-case `bytes=`, no spaces): the bounds `parse_range` would put in its one ByteRange, without
building a verdict, or None for everything else, which then goes to `parse_range`.

Where the RFC leaves a choice we answer as nginx 1.22 does (its ngx_http_range_parse, checked by
tests/oca/test_nginx_differential.py), so the appliance is a drop-in for it:
- a Range header shorter than `bytes=N` or of another unit is ignored (200); a malformed `bytes=`
  set is refused with 416 (RFC 9110 §14.2 also allows ignoring it; nginx refuses, so do we);
- spaces may stand around numbers and the dash of `a-b`, not between a suffix dash and its number;
- `a-b` with `b` past the end is clamped; `-n` takes the last n bytes (all of them when n >= size);
- a range that starts past the end is dropped; none left: 416 `bytes */SIZE` (`-0` included); a
  range that is empty but starts at 0 (any range of an empty file) sends the whole file (200);
- several ranges become one multipart/byteranges 206, in the order asked, unless together they ask
  for more bytes than the file has (overlap abuse) or more than `max_ranges` ranges (nginx: its
  max_ranges directive, unlimited by default; we cap at 64): then 200 whole;
- `If-Range` (§13.1.5): an entity tag must equal our strong ETag exactly; a date (any of the three
  HTTP date formats) must equal Last-Modified to the second; otherwise the whole file (200).
"""
from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass
from typing import NamedTuple

MAX_RANGES = 64
MAX_OFFSET = 2**63 - 1  # off_t: nginx refuses larger numbers with 416


# Verdicts are NamedTuples: immutable values like frozen dataclasses, but built 3x faster, and
# one of each is made per request on the hot path. Callers dispatch on their type.
class ByteRange(NamedTuple):
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


class Whole(NamedTuple):
    """Send the whole representation with 200."""

    reason: str


class Partial(NamedTuple):
    """Send these ranges with 206: one range plainly, several as multipart/byteranges."""

    ranges: tuple[ByteRange, ...]


class Unsatisfiable(NamedTuple):
    """416 with `Content-Range: bytes */size`."""

    size: int


RangeVerdict = Whole | Partial | Unsatisfiable

NO_RANGE = Whole("no range")
NOT_BYTES = Whole("not a bytes range")
EMPTY_AT_ZERO = Whole("empty range at offset 0")
TOO_MANY = Whole("too many ranges")
OVERLAP = Whole("ranges overlap beyond the representation")

# The common case, one `a-b` or `a-` without spaces; 18 digits cannot overflow off_t.
_SIMPLE = re.compile(r"[Bb][Yy][Tt][Ee][Ss]=([0-9]{1,18})-([0-9]{0,18})")
# One range-spec of the general grammar, spaces where nginx skips them.
_SPEC = re.compile(r" *(?:([0-9]+) *- *([0-9]*)|-([0-9]+)) *")


# The hot path's case: `bytes=a-b`, `bytes=a-` or `bytes=-n`, exactly so (other spellings are parse_range's).
_SINGLE = re.compile(r"bytes=(?:([0-9]{1,18})-([0-9]{0,18})|-([0-9]{1,18}))").fullmatch


def single_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end) when `header` is one plain range that `parse_range` answers with a one-range
    Partial: exactly that range's bounds (RFC 9110 §14.1.2: `b` past the end clamped, `-n` the last
    n bytes). None for anything else — another spelling, several ranges, 416, 200 — and the caller
    asks `parse_range`. Builds no verdict: it runs per request on the appliance's hot path, where
    parse_range's NamedTuples were a fifth of the request's Python time."""
    m = _SINGLE(header)
    if m is None:
        return None
    first, last, suffix = m.groups()
    if suffix is None:
        start = int(first)
        end = size if not last else int(last) + 1  # (18 digits: no off_t overflow, as in _SIMPLE)
        if end > size:
            end = size
    else:
        count = int(suffix)
        start, end = (size - count if count < size else 0), size
    return (start, end) if start < end else None


def _number(digits: str) -> int:
    """A range number; leading zeros as nginx reads them (never an overflow), and anything longer
    than off_t's 19 digits is past MAX_OFFSET without int(), which refuses over 4300 digits."""
    significant = digits.lstrip("0")
    return MAX_OFFSET + 1 if len(significant) > 19 else int(significant or "0")


def parse_range(header: str | None, size: int, max_ranges: int = MAX_RANGES) -> RangeVerdict:
    """Decide what a `Range` header asks of a representation of `size` bytes."""
    if header is None:
        return NO_RANGE
    simple = _SIMPLE.fullmatch(header)
    if simple is not None:
        last = simple[2]
        return _one(int(simple[1]), size if last == "" else _end(int(last), size), size)
    header = header.strip(" \t")
    if len(header) < 7 or header[:6].lower() != "bytes=":
        return NOT_BYTES
    return _parse_set(header, size, max_ranges)


def _end(last: int, size: int) -> int:
    return size if last >= size else last + 1


def _one(start: int, end: int, size: int) -> RangeVerdict:
    if start < end:
        return Partial((ByteRange(start, end),))
    return EMPTY_AT_ZERO if start == 0 else Unsatisfiable(size)


def _parse_set(header: str, size: int, max_ranges: int) -> RangeVerdict:
    ranges: list[ByteRange] = []
    total, pos, n = 0, 6, len(header)
    while True:
        m = _SPEC.match(header, pos)
        if m is None:
            return Unsatisfiable(size)
        first, last, suffix = m.groups()
        if suffix is not None:
            count = _number(suffix)
            if count > MAX_OFFSET:
                return Unsatisfiable(size)
            start, end = (size - count if count < size else 0), size
        else:
            start = _number(first)
            if start > MAX_OFFSET or (last and _number(last) > MAX_OFFSET):
                return Unsatisfiable(size)
            end = size if last == "" else _end(_number(last), size)
        pos = m.end()
        if pos != n and header[pos] != ",":  # nginx checks the separator before the range
            return Unsatisfiable(size)
        if start < end:
            ranges.append(ByteRange(start, end))
            total += end - start
            if len(ranges) > max_ranges:
                return TOO_MANY
        elif start == 0:
            return EMPTY_AT_ZERO
        if pos == n:
            break
        pos += 1
    if not ranges:
        return Unsatisfiable(size)
    if total > size:
        return OVERLAP
    return Partial(tuple(ranges))


_DATE_FORMATS = ("%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %d %H:%M:%S %Y")


def parse_http_date(text: str) -> int | None:
    """Seconds since the epoch of an HTTP date (IMF-fixdate, RFC 850 or asctime), else None."""
    text = " ".join(text.split())
    for fmt in _DATE_FORMATS:
        try:
            return calendar.timegm(time.strptime(text, fmt))
        except ValueError:
            continue
    return None


def if_range_matches(if_range: str | None, etag: str, last_modified: int) -> bool:
    """True when the ranges may be served: no If-Range, or it names our current representation."""
    if if_range is None:
        return True
    value = if_range.strip(" \t")
    if len(value) >= 2 and value.endswith('"'):
        return value == etag  # a weak tag never equals our strong one
    return parse_http_date(value) == last_modified


def decide(
    range_header: str | None,
    if_range: str | None,
    size: int,
    etag: str,
    last_modified: int,
    max_ranges: int = MAX_RANGES,
) -> RangeVerdict:
    if range_header is None:
        return NO_RANGE
    if if_range is not None and not if_range_matches(if_range, etag, last_modified):
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
