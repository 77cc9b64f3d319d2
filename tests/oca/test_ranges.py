"""RFC 9110 §14 range decisions, table-tested against what nginx answers (see the differential test)."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oca.core.ranges import (ByteRange, Partial, Unsatisfiable, Whole, decide, if_range_matches,
                             multipart_layout, parse_range)

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
