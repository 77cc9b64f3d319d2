"""Byte ranges of a download: what is done (from the partial's journal), what is left, in parts.

Ranges are half-open [start, end) and kept merged and sorted. A big file is fetched as several ranged
GETs in parallel, each writing at its offset, so a partial file can have holes: its length says
nothing, the journal of completed ranges says what is there. Only ranges inside the partial file's
current length count (the store may have started it over).
"""
from __future__ import annotations

from typing import Iterable

Range = tuple[int, int]


def merge(ranges: Iterable[Range]) -> list[Range]:
    out: list[list[int]] = []
    for s, e in sorted(r for r in ranges if r[1] > r[0]):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def clip(ranges: Iterable[Range], limit: int) -> list[Range]:
    return merge((max(s, 0), min(e, limit)) for s, e in ranges)


def covered(ranges: Iterable[Range]) -> int:
    return sum(e - s for s, e in merge(ranges))


def missing(size: int, done: Iterable[Range]) -> list[Range]:
    """The gaps of [0, size) not covered by `done`."""
    gaps, pos = [], 0
    for s, e in clip(done, size):
        if s > pos:
            gaps.append((pos, s))
        pos = max(pos, e)
    if pos < size:
        gaps.append((pos, size))
    return gaps


def split(gaps: Iterable[Range], part_bytes: int) -> list[Range]:
    """Cut each gap into parts of at most `part_bytes` (the last of each gap may be shorter)."""
    if part_bytes <= 0:
        raise ValueError("part_bytes must be positive")
    out = []
    for s, e in gaps:
        while s < e:
            out.append((s, min(e, s + part_bytes)))
            s += part_bytes
    return out


def plan_parts(size: int, done: Iterable[Range], part_bytes: int) -> list[Range]:
    return split(missing(size, done), part_bytes)


def content_range_ok(header: str | None, start: int, end: int, size: int) -> bool:
    """Is `Content-Range: bytes a-b/N` (RFC 9110 §14.4) exactly [start, end) of a file of `size`?"""
    if header is None:
        return False
    unit, _, rest = header.strip().partition(" ")
    span, _, total = rest.partition("/")
    a, _, b = span.partition("-")
    try:
        return unit == "bytes" and int(a) == start and int(b) == end - 1 and int(total) == size
    except ValueError:
        return False
