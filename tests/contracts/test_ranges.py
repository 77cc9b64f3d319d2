"""contracts.ranges, the one Range parser (the appliance's and `origin serve`'s): RFC 9110 §14 decisions,
table-tested against what nginx answers (tests/oca/test_nginx_differential.py puts the appliance
beside a real nginx), and properties: whatever the header, a verdict is sound, and the hot path's
`single_range` answers only what parse_range answers (one plain range), never anything else.

The cases marked "origin:" came from the origin's own parser (origin/core/ranges.py, removed): the
comment gives what the origin used to answer where it differed; it now answers as the appliance and
nginx do."""
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.ranges import (ByteRange, Partial, Unsatisfiable, Whole, decide, if_range_matches,
                              multipart_layout, parse_range, single_range)

SIZE = 1000
R = ByteRange

CASES = [
    (None, Whole("no range")),
    ("bytes=0-99", Partial((R(0, 100),))),
    ("bytes=100-", Partial((R(100, 1000),))),
    ("bytes=-100", Partial((R(900, 1000),))),
    ("bytes=-5000", Partial((R(0, 1000),))),
    ("bytes=0-99999", Partial((R(0, 1000),))),
    ("bytes=999-999", Partial((R(999, 1000),))),
    ("bytes=1000-", Unsatisfiable(SIZE)),
    ("bytes=1000-2000", Unsatisfiable(SIZE)),
    ("bytes=-0", Unsatisfiable(SIZE)),
    ("bytes=5-3", Unsatisfiable(SIZE)),
    ("bytes=abc", Unsatisfiable(SIZE)),
    ("bytes=", Whole("not a bytes range")),
    ("bytes=- 5", Unsatisfiable(SIZE)),
    ("bytes=000000000000000000000001-2", Partial((R(1, 3),))),
    ("bytes=0-9223372036854775808", Unsatisfiable(SIZE)),
    ("bytes=-", Unsatisfiable(SIZE)),
    ("bytes=1-2,", Unsatisfiable(SIZE)),
    ("bytes=0-1;2-3", Unsatisfiable(SIZE)),
    ("bytes=99999999999999999999-", Unsatisfiable(SIZE)),
    ("bytes=" + "9" * 5000 + "-", Unsatisfiable(SIZE)),  # past int()'s 4300-digit limit: 416, not 500
    ("bytes=0-" + "9" * 5000, Unsatisfiable(SIZE)),
    ("bytes=-" + "9" * 5000, Unsatisfiable(SIZE)),
    ("bytes=" + "0" * 5000 + "1-2", Partial((R(1, 3),))),  # leading zeros never overflow (nginx)
    ("Bytes=0-0", Partial((R(0, 1),))),
    ("bytes= 1 - 2 ", Partial((R(1, 3),))),
    ("items=0-1", Whole("not a bytes range")),
    ("bytes=0-0,-1", Partial((R(0, 1), R(999, 1000)))),
    ("bytes=500-600,0-10", Partial((R(500, 601), R(0, 11)))),
    ("bytes=0-10,2000-3000", Partial((R(0, 11),))),
    ("bytes=2000-3000,0-10", Partial((R(0, 11),))),
    ("bytes=0-999,0-999", Whole("ranges overlap beyond the representation")),
    ("bytes=2000-,3000-", Unsatisfiable(SIZE)),
    # from the origin's former table
    ("bytes=500-999", Partial((R(500, 1000),))),  # last-pos exactly the last byte
    ("bytes=999-", Partial((R(999, 1000),))),
    ("bytes 0-1", Whole("not a bytes range")),
    ("BYTES = 0-9", Whole("not a bytes range")),  # origin: 206 (no OWS around "=" in §14.1.1's grammar)
    ("bytes=5-4", Unsatisfiable(SIZE)),  # origin: 200, ignored as invalid
    ("bytes=a-b", Unsatisfiable(SIZE)),  # origin: 200 (nginx refuses a malformed set; §14.2 allows either)
    ("bytes=1-2-3", Unsatisfiable(SIZE)),  # origin: 200
    ("bytes=+1-2", Unsatisfiable(SIZE)),  # origin: 200
    ("bytes=0-1,3-4", Partial((R(0, 2), R(3, 5)))),  # origin: 200, the whole file; now multipart/byteranges
]


@pytest.mark.parametrize("header,expected", CASES, ids=[repr(c[0]) for c in CASES])
def test_parse_range(header, expected):
    assert parse_range(header, SIZE) == expected


@pytest.mark.parametrize("header,expected", [
    ("bytes=0-0", Whole("empty range at offset 0")),
    ("bytes=-5", Whole("empty range at offset 0")),
    ("bytes=0-", Whole("empty range at offset 0")),
    ("bytes=1-", Unsatisfiable(0)),
    ("bytes=abc", Unsatisfiable(0)),
], ids=["0-0", "suffix", "0-", "1-", "garbage"])
def test_empty_file_as_nginx(header, expected):
    assert parse_range(header, 0) == expected


def test_byte_range_headers():
    assert R(0, 100).content_range(1000) == "bytes 0-99/1000"
    assert R(0, 100).length == 100


def test_too_many_ranges_send_whole():
    header = "bytes=" + ",".join(f"{i}-{i}" for i in range(40))
    assert parse_range(header, SIZE, max_ranges=32) == Whole("too many ranges")
    assert isinstance(parse_range(header, SIZE), Partial)  # nginx serves 40; our default cap is 64


ETAG, LM = '"abc"', 1893456000  # Tue, 01 Jan 2030 00:00:00 GMT


@pytest.mark.parametrize("if_range,ok", [
    (None, True), ('"abc"', True), ('"abd"', False), ('W/"abc"', False), ("Tue, 01 Jan 2030 00:00:00 GMT", True),
    ("Tuesday, 01-Jan-30 00:00:00 GMT", True), ("Tue Jan  1 00:00:00 2030", True),
    ("Wed, 02 Jan 2030 00:00:00 GMT", False), ("garbage", False),
], ids=["absent", "etag-match", "etag-mismatch", "weak-etag", "date-match", "rfc850-match", "asctime-match",
        "date-mismatch", "garbage"])
def test_if_range(if_range, ok):
    assert if_range_matches(if_range, ETAG, LM) is ok
    verdict = decide("bytes=0-9", if_range, SIZE, ETAG, LM)
    assert isinstance(verdict, Partial if ok else Whole)


def test_multipart_layout_lengths_add_up():
    ranges = (R(0, 10), R(500, 520))
    layout = multipart_layout(ranges, SIZE, "video/mp4", "B0001")
    body = b"".join(h + b"x" * r.length for h, r in zip(layout.heads, ranges)) + layout.tail
    assert len(body) == layout.length
    assert layout.heads[1].endswith(b"Content-Range: bytes 500-519/1000\r\n\r\n")
    assert layout.content_type == "multipart/byteranges; boundary=B0001"


@given(st.integers(0, 10**6), st.integers(0, 2 * 10**6), st.integers(0, 2 * 10**6), st.booleans(), st.booleans())
def test_a_numeric_range_lies_inside_the_file(size, a, b, open_end, suffix):
    header = f"bytes=-{a}" if suffix else f"bytes={a}-" if open_end else f"bytes={a}-{b}"
    verdict = parse_range(header, size)
    if isinstance(verdict, Partial):
        ((start, end),) = verdict.ranges
        assert 0 <= start < end <= size
        assert end == size or (not suffix and not open_end and end == b + 1)
    elif isinstance(verdict, Whole):  # only an empty file, asked from offset 0 (or for a suffix)
        assert size == 0 and verdict == Whole("empty range at offset 0")
    else:
        assert verdict == Unsatisfiable(size)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="bytes=0123456789-, ", max_size=40), st.integers(0, 10_000))
def test_any_header_gives_a_sound_verdict(header, size):
    verdict = parse_range(header, size)
    if isinstance(verdict, Partial):
        assert verdict.ranges and sum(r.length for r in verdict.ranges) <= size
        for r in verdict.ranges:
            assert 0 <= r.start < r.end <= size
    elif isinstance(verdict, Unsatisfiable):
        assert verdict.size == size


# single_range, the hot path's shortcut: parse_range's own answer whenever it answers, None otherwise.
def _agrees(header, size):
    span = single_range(header, size)
    verdict = parse_range(header, size)
    if span is not None:
        assert verdict == Partial((ByteRange(*span),))
    return span, verdict


@pytest.mark.parametrize("header,expected", CASES, ids=[repr(c[0]) for c in CASES])
def test_single_range_agrees_with_the_table(header, expected):
    if header is None:
        return
    span, verdict = _agrees(header, SIZE)
    plain = header.startswith("bytes=") and " " not in header and "," not in header
    short = all(len(number) <= 18 for number in re.findall("[0-9]+", header))  # longer ones: parse_range's
    if isinstance(verdict, Partial) and len(verdict.ranges) == 1 and plain and short:
        assert span is not None  # the common spellings never fall off the fast path


@pytest.mark.parametrize("header,size,span", [
    ("bytes=0-99", 1000, (0, 100)), ("bytes=100-", 1000, (100, 1000)), ("bytes=-100", 1000, (900, 1000)),
    ("bytes=-5000", 1000, (0, 1000)), ("bytes=0-99999", 1000, (0, 1000)), ("bytes=999-999", 1000, (999, 1000)),
    ("bytes=0-0", 0, None), ("bytes=-5", 0, None), ("bytes=-0", 1000, None), ("bytes=1000-", 1000, None),
    ("bytes=5-3", 1000, None), ("Bytes=0-0", 1000, None), ("bytes= 1-2", 1000, None), ("bytes=0-1,3-4", 1000, None),
    ("bytes=" + "0" * 19 + "1-2", 1000, None), ("bytes=0-" + "9" * 19, 1000, None), ("bytes=\u0661-2", 1000, None),
    ("bytes=0-1\n", 1000, None), ("bytes=209698462-209714845", 200 << 20, (209698462, 209714846)),
], ids=lambda v: repr(v) if isinstance(v, str) else None)
def test_single_range(header, size, span):
    assert _agrees(header, size)[0] == span


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet="bytes=0123456789-, B\t", max_size=30), st.integers(0, 10_000))
def test_single_range_is_parse_range_whenever_it_answers(header, size):
    _agrees(header, size)


@given(st.integers(0, 10**6), st.integers(0, 2 * 10**6), st.integers(0, 2 * 10**6), st.booleans(), st.booleans())
def test_single_range_takes_every_plain_satisfiable_range(size, a, b, open_end, suffix):
    header = f"bytes=-{a}" if suffix else f"bytes={a}-" if open_end else f"bytes={a}-{b}"
    span, verdict = _agrees(header, size)
    assert (span is not None) == isinstance(verdict, Partial)
