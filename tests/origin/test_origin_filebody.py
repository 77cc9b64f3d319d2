"""origin.filebody.body_for: a contracts.ranges verdict becomes the status, length, headers and body
pieces of `origin serve`'s response (table-driven; the sending itself is tested over real sockets in
test_origin_serve.py and test_origin_abuse.py, with sendfile on and off)."""
from __future__ import annotations

import pytest

from contracts.ranges import ByteRange, Partial, Unsatisfiable, Whole
from origin.filebody import body_for

R = ByteRange
SIZE = 1000

CASES = [
    ("whole", Whole("no range"), SIZE, 200, SIZE, (R(0, SIZE),), {"Content-Type": "video/mp4"}),
    ("empty-file", Whole("empty range at offset 0"), 0, 200, 0, (), {"Content-Type": "video/mp4"}),
    ("one-range", Partial((R(10, 20),)), SIZE, 206, 10, (R(10, 20),),
     {"Content-Range": "bytes 10-19/1000", "Content-Type": "video/mp4"}),
    ("unsatisfiable", Unsatisfiable(SIZE), SIZE, 416, 0, (), {"Content-Range": "bytes */1000",
                                                              "Content-Type": "video/mp4"}),
]


@pytest.mark.parametrize("verdict,size,status,length,pieces,headers", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_body_for(verdict, size, status, length, pieces, headers):
    body = body_for(verdict, size, "video/mp4", "B1")
    assert (body.status, body.length, body.pieces, body.headers) == (status, length, pieces, headers)


def test_several_ranges_are_one_multipart_body():
    body = body_for(Partial((R(500, 520), R(0, 10))), SIZE, "video/mp4", "B1")
    assert body.status == 206 and body.headers == {"Content-Type": "multipart/byteranges; boundary=B1"}
    head1, r1, head2, r2, tail = body.pieces
    assert (r1, r2) == (R(500, 520), R(0, 10))
    assert head1 == b"\r\n--B1\r\nContent-Type: video/mp4\r\nContent-Range: bytes 500-519/1000\r\n\r\n"
    assert head2.endswith(b"Content-Range: bytes 0-9/1000\r\n\r\n") and tail == b"\r\n--B1--\r\n"
    assert body.length == len(head1) + 20 + len(head2) + 10 + len(tail)
