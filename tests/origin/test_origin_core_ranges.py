"""origin.core.ranges against RFC 9110 §14 (table-driven) and a property: a satisfiable range always
lies inside the file."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from origin.core.ranges import Ignore, Satisfiable, Unsatisfiable, if_range_allows, parse_range

SIZE = 1000
CASES = [
    ("bytes=0-499", Satisfiable(0, 499)),
    ("bytes=500-999", Satisfiable(500, 999)),
    ("bytes=500-", Satisfiable(500, 999)),
    ("bytes=-500", Satisfiable(500, 999)),
    ("bytes=-5000", Satisfiable(0, 999)),  # suffix longer than the file: the whole file
    ("bytes=0-0", Satisfiable(0, 0)),
    ("bytes=999-", Satisfiable(999, 999)),
    ("bytes=900-5000", Satisfiable(900, 999)),  # clamped
    ("bytes= 1-2 ", Satisfiable(1, 2)),
    ("Bytes=1-2", Satisfiable(1, 2)),
    ("bytes=1-2,", Satisfiable(1, 2)),  # empty list elements are allowed
    ("bytes=1000-", Unsatisfiable(SIZE)),
    ("bytes=1000-2000", Unsatisfiable(SIZE)),
    ("bytes=-0", Unsatisfiable(SIZE)),
    ("bytes=5-4", Ignore("last-pos before first-pos")),
    ("bytes=-", Ignore("range without positions")),
    ("bytes=a-b", Ignore("malformed range")),
    ("bytes=1-2-3", Ignore("malformed range")),
    ("bytes=+1-2", Ignore("malformed range")),
    ("bytes 0-1", Ignore("not a bytes range")),
    ("items=0-1", Ignore("not a bytes range")),
    ("bytes=", Ignore("empty range set")),
    ("bytes=0-1,3-4", Ignore("several ranges: served whole")),
    ("bytes=" + "9" * 30 + "-", Ignore("range number too long")),
    (None, Ignore("no Range header")),
]


@pytest.mark.parametrize("header,verdict", CASES, ids=[str(c[0]) for c in CASES])
def test_parse_range(header, verdict):
    assert parse_range(header, SIZE) == verdict


def test_empty_file():
    assert parse_range("bytes=0-", 0) == Unsatisfiable(0)
    assert parse_range("bytes=-1", 0) == Unsatisfiable(0)


def test_content_range_headers():
    assert Satisfiable(0, 99).content_range(1000) == "bytes 0-99/1000"
    assert Satisfiable(0, 99).length == 100
    assert Unsatisfiable(1000).content_range() == "bytes */1000"


@given(st.integers(0, 10**6), st.integers(0, 2 * 10**6), st.integers(0, 2 * 10**6), st.booleans(), st.booleans())
def test_satisfiable_is_inside(size, a, b, open_end, suffix):
    header = f"bytes=-{a}" if suffix else f"bytes={a}-" if open_end else f"bytes={a}-{b}"
    verdict = parse_range(header, size)
    if isinstance(verdict, Satisfiable):
        assert 0 <= verdict.start <= verdict.end < size


IF_RANGE = [
    (None, True),
    ('"abc"', True),
    ('"abd"', False),
    ('W/"abc"', False),
    ("Thu, 01 Jan 1970 00:16:40 GMT", True),  # = 1000
    ("Thu, 01 Jan 1970 00:16:41 GMT", False),
    ("not a date", False),
]


@pytest.mark.parametrize("header,allowed", IF_RANGE, ids=[str(c[0]) for c in IF_RANGE])
def test_if_range(header, allowed):
    assert if_range_allows(header, '"abc"', 1000) is allowed
