"""Differential test: the appliance and a real nginx serve the same files and must answer every
Range / If-Range request alike (RFC 9110 §14, §13.1.5 — nginx is the oracle, see ARCHITECTURE §2).

Compared: status, Content-Range, Content-Length and the body. multipart/byteranges bodies are parsed
(the boundaries differ) and compared part by part — Content-Range, Content-Type and bytes; a 416 is
compared by status and Content-Range only (nginx's error body is HTML). If-Range values are built from
each server's own validators (a HEAD first): nginx's ETag is `"mtime-size"`, ours the xxh3 hash, and
the Last-Modified dates may differ. Every case runs against the appliance with sendfile on and off.
Requests go through http.client with the Range header put verbatim (no Accept-Encoding, nothing else).
"""
from __future__ import annotations

import http.client
import random
import ssl
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `tests.support` under a bare `pytest`
from tests.support.nginx import NginxServer  # noqa: E402
from tests.support.oca_proc import OcaProcess  # noqa: E402

pytestmark = pytest.mark.timeout(300)

MiB = 1 << 20
FILES = {"titles/big.mp4": MiB, "titles/one.mp4": 1, "titles/empty.mp4": 0}
BIG = "titles/big.mp4"


# -- cases ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    id: str
    range: str | tuple[str, ...] | None  # a tuple sends several Range header lines
    if_range: str | None = None  # template: {etag} {etag_bare} {lm} {lm_rfc850} {lm_asctime} {lm_minus_1s} {lm_plus_1s}
    head: bool = False  # also compare HEAD


MANY = "bytes=" + ",".join(f"{i * 1000}-{i * 1000 + 9}" for i in range(40))  # 40 disjoint ranges
EXACTLY_32 = "bytes=" + ",".join(f"{i * 1000}-{i * 1000 + 9}" for i in range(32))
BIGNUM = "99999999999999999999"
OFF_T_MAX = str(2**63 - 1)

CASES = [
    Case("no-range", None, head=True),
    Case("a-b", "bytes=0-99", head=True),
    Case("a-b-middle", "bytes=1000-1999"),
    Case("first-byte", "bytes=0-0"),
    Case("a-", "bytes=1000-"),
    Case("0-", "bytes=0-", head=True),
    Case("1-", "bytes=1-"),
    Case("suffix", "bytes=-500", head=True),
    Case("suffix-1", "bytes=-1"),
    Case("suffix-bigger-than-file", "bytes=-2000000"),
    Case("suffix-zero", "bytes=-0", head=True),
    Case("last-byte", f"bytes={MiB - 1}-{MiB - 1}"),
    Case("end-clamped", "bytes=1048000-2000000"),
    Case("start-at-size", f"bytes={MiB}-"),
    Case("past-end", "bytes=2000000-3000000", head=True),
    Case("start-gt-end", "bytes=5-3"),
    Case("start-gt-end-at-1", "bytes=1-0"),
    Case("garbage", "bytes=abc", head=True),
    Case("garbage-no-unit", "garbage"),
    Case("empty-set", "bytes="),
    Case("only-dash", "bytes=-"),
    Case("unit-uppercase", "BYTES=0-9"),
    Case("unit-mixed-case", "Bytes=0-9"),
    Case("other-unit", "items=0-9"),
    Case("no-equals", "bytes 0-9"),
    Case("space-before-equals", "bytes =0-9"),
    Case("spaces-around-dash", "bytes= 1 - 2 "),
    Case("space-after-suffix-dash", "bytes=- 5"),
    Case("space-before-comma", "bytes=0-1 ,5-6"),
    Case("tab-after-comma", "bytes=0-1,\t5-6"),
    Case("value-padded", "   bytes=0-9   "),
    Case("trailing-comma", "bytes=0-1,"),
    Case("leading-comma", "bytes=,0-1"),
    Case("double-comma", "bytes=0-1,,5-6"),
    Case("semicolon", "bytes=0-1;5-6"),
    Case("negative-start", "bytes=-5-10"),
    Case("plus-sign", "bytes=+1-2"),
    Case("hex", "bytes=0x10-0x20"),
    Case("leading-zeros", "bytes=000000000000000000000000001-2"),
    Case("huge-start", f"bytes={BIGNUM}-"),
    Case("huge-end", f"bytes=0-{BIGNUM}"),
    Case("huge-suffix", f"bytes=-{BIGNUM}"),
    Case("off_t-max-start", f"bytes={OFF_T_MAX}-"),
    Case("off_t-max-end", f"bytes=0-{OFF_T_MAX}"),
    Case("off_t-max-plus-1-end", f"bytes=0-{2**63}"),
    Case("two-ranges", "bytes=0-99,200-299", head=True),
    Case("out-of-order", "bytes=500-599,0-9"),
    Case("overlapping", "bytes=0-99,50-149"),
    Case("overlapping-beyond-size", "bytes=0-,0-"),
    Case("adjacent", "bytes=0-9,10-19"),
    Case("prefix-and-suffix", "bytes=0-0,-1"),
    Case("one-unsatisfiable", "bytes=0-9,2000000-2000010", head=True),
    Case("unsatisfiable-first", "bytes=2000000-,0-9"),
    Case("all-unsatisfiable", "bytes=2000000-,3000000-"),
    Case("suffix-zero-and-range", "bytes=-0,0-4"),
    Case("one-garbage-spec", "bytes=0-9,abc"),
    Case("exactly-32-ranges", EXACTLY_32),
    Case("40-ranges", MANY),
    Case("two-range-headers", ("bytes=0-9", "bytes=10-19")),
    Case("if-range-etag-match", "bytes=0-99", "{etag}", head=True),
    Case("if-range-etag-mismatch", "bytes=0-99", '"no-such-etag"', head=True),
    Case("if-range-weak-etag", "bytes=0-99", "W/{etag}"),
    Case("if-range-etag-unquoted", "bytes=0-99", "{etag_bare}"),
    Case("if-range-etag-list", "bytes=0-99", '"other", {etag}'),
    Case("if-range-date-match", "bytes=0-99", "{lm}", head=True),
    Case("if-range-date-earlier", "bytes=0-99", "{lm_minus_1s}"),
    Case("if-range-date-later", "bytes=0-99", "{lm_plus_1s}"),
    Case("if-range-date-rfc850", "bytes=0-99", "{lm_rfc850}"),
    Case("if-range-date-asctime", "bytes=0-99", "{lm_asctime}"),
    Case("if-range-garbage", "bytes=0-99", "yesterday"),
    Case("if-range-match-unsatisfiable", "bytes=2000000-", "{etag}"),
    Case("if-range-mismatch-unsatisfiable", "bytes=2000000-", '"no-such-etag"'),
    Case("if-range-mismatch-garbage-range", "bytes=abc", '"no-such-etag"'),
    Case("if-range-match-multi", "bytes=0-9,20-29", "{etag}"),
    Case("if-range-date-match-multi", "bytes=0-9,20-29", "{lm}"),
    Case("if-range-without-range", None, "{etag}"),
]
assert len({c.id for c in CASES}) == len(CASES)


def _requests():
    for key in FILES:
        for case in CASES:
            yield pytest.param(key, case, "GET", id=f"{key.split('/')[-1]}-{case.id}-GET")
            if case.head:
                yield pytest.param(key, case, "HEAD", id=f"{key.split('/')[-1]}-{case.id}-HEAD")


# -- servers -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("differential")
    rng = random.Random(20240601)
    for key, size in FILES.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
    return root


@pytest.fixture(scope="module")
def contents(data_dir) -> dict[str, bytes]:
    return {key: (data_dir / key).read_bytes() for key in FILES}


@pytest.fixture(scope="module")
def nginx(data_dir):
    with NginxServer(data_dir, workers=1) as server:
        yield server


@pytest.fixture(scope="module", params=[True, False], ids=["sendfile", "no-sendfile"])
def oca(request, data_dir):
    with OcaProcess(data_dir, workers=1, sendfile=request.param) as server:
        yield server


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def __repr__(self) -> str:
        return f"Reply({self.status}, {len(self.body)} bytes)"


def send(port: int, method: str, path: str, headers: list[tuple[str, str]],
         conn: http.client.HTTPConnection | None = None, tls: ssl.SSLContext | None = None) -> Reply:
    """One request with exactly these headers (plus Host); reuses `conn` when given; over HTTPS
    with `tls` (test_tls_differential.py)."""
    own = conn is None
    conn = conn or (http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=tls) if tls is not None
                    else http.client.HTTPConnection("127.0.0.1", port, timeout=30))
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        return Reply(resp.status, resp.headers, body)
    finally:
        if own:
            conn.close()


def validators(port: int, path: str, tls: ssl.SSLContext | None = None) -> dict[str, str]:
    """The If-Range templates filled from this server's own ETag and Last-Modified."""
    reply = send(port, "HEAD", path, [], tls=tls)
    assert reply.status == 200, f"HEAD {path}: {reply.status}"
    etag, lm = reply.header("ETag"), reply.header("Last-Modified")
    assert etag and lm, f"HEAD {path}: no ETag or Last-Modified"
    when = parsedate_to_datetime(lm)
    return {
        "etag": etag, "etag_bare": etag.strip('"'), "lm": lm,
        "lm_rfc850": when.strftime("%A, %d-%b-%y %H:%M:%S GMT"),
        "lm_asctime": f"{when:%a %b} {when.day:2d} {when:%H:%M:%S %Y}",
        "lm_minus_1s": format_datetime(when - timedelta(seconds=1), usegmt=True),
        "lm_plus_1s": format_datetime(when + timedelta(seconds=1), usegmt=True),
    }


def request_headers(case: Case, fill: dict[str, str]) -> list[tuple[str, str]]:
    headers = []
    ranges = case.range if isinstance(case.range, tuple) else (case.range,) if case.range is not None else ()
    headers += [("Range", r) for r in ranges]
    if case.if_range is not None:
        headers.append(("If-Range", case.if_range.format(**fill)))
    return headers


# -- comparison ----------------------------------------------------------------------------------

def parse_multipart(reply: Reply) -> list[tuple[str, str, bytes]]:
    """(Content-Range, Content-Type, bytes) of each part; checks the framing strictly."""
    ctype = reply.header("Content-Type") or ""
    assert ctype.startswith("multipart/byteranges; boundary="), ctype
    delim = b"--" + ctype.split("boundary=", 1)[1].strip().strip('"').encode()
    body = reply.body
    pos = body.index(delim)
    assert body[:pos] in (b"", b"\r\n"), f"preamble {body[:pos]!r}"
    parts = []
    while True:
        pos += len(delim)
        if body[pos:pos + 2] == b"--":
            assert body[pos + 2:] in (b"", b"\r\n"), f"epilogue {body[pos + 2:]!r}"
            return parts
        assert body[pos:pos + 2] == b"\r\n", f"after boundary: {body[pos:pos + 2]!r}"
        head_end = body.index(b"\r\n\r\n", pos)
        fields = dict(line.split(": ", 1) for line in body[pos + 2:head_end].decode("latin-1").split("\r\n"))
        fields = {k.lower(): v for k, v in fields.items()}
        first, last = fields["content-range"].removeprefix("bytes ").split("/")[0].split("-")
        start = head_end + 4
        end = start + int(last) - int(first) + 1
        parts.append((fields["content-range"], fields.get("content-type", ""), body[start:end]))
        assert body[end:end + 2] == b"\r\n", f"after part: {body[end:end + 2]!r}"
        pos = end + 2
        assert body[pos:].startswith(delim), "part not followed by a boundary"


def is_multipart(reply: Reply) -> bool:
    return (reply.header("Content-Type") or "").startswith("multipart/byteranges")


def describe(reply: Reply, method: str) -> str:
    text = f"{reply.status} Content-Range={reply.header('Content-Range')} Content-Length={reply.header('Content-Length')}"
    if is_multipart(reply) and method == "GET":
        parts = [cr.removeprefix("bytes ") for cr, _, _ in parse_multipart(reply)]
        text += f" {len(parts)} parts=" + ",".join(parts[:4]) + (",..." if len(parts) > 4 else "")
    elif method == "GET" and reply.status != 416:
        text += f" body={len(reply.body)} bytes"
    return text


def check_bytes(reply: Reply, data: bytes) -> None:
    """A 200 or single-part 206 body is the file or the slice its Content-Range names."""
    if reply.status == 200:
        assert reply.body == data
    elif reply.status == 206 and not is_multipart(reply):
        first, last = reply.header("Content-Range").removeprefix("bytes ").split("/")[0].split("-")
        assert reply.body == data[int(first):int(last) + 1]


def _short(value: str, limit: int = 100) -> str:
    return value if len(value) <= limit else f"{value[:limit]}...({len(value)} chars)"


def compare(ngx: Reply, ours: Reply, method: str, data: bytes, ours_get_length: str | None = None) -> None:
    assert ours.status == ngx.status
    if ngx.status == 416:
        assert ours.header("Content-Range") == ngx.header("Content-Range")
        return
    assert ours.header("Content-Range") == ngx.header("Content-Range")
    assert is_multipart(ours) == is_multipart(ngx)
    if not is_multipart(ngx):
        assert ours.header("Content-Length") == ngx.header("Content-Length")
        if method == "GET":
            assert ours.body == ngx.body
            check_bytes(ours, data)
        else:
            assert ours.body == ngx.body == b""
        return
    if method == "HEAD":  # boundaries differ in length: HEAD must announce what GET sends
        assert ours.body == b"" and ours.header("Content-Length") == ours_get_length
        return
    assert ours.header("Content-Length") == str(len(ours.body))
    assert ngx.header("Content-Length") == str(len(ngx.body))
    assert parse_multipart(ours) == parse_multipart(ngx)


@pytest.mark.parametrize("key, case, method", list(_requests()))
def test_same_answer_as_nginx(nginx, oca, contents, key, case, method):
    ngx_path, our_path = "/" + key, oca.signed_path(key)
    ngx_headers = request_headers(case, validators(nginx.port, ngx_path))
    our_headers = request_headers(case, validators(oca.port, our_path))
    ngx = send(nginx.port, method, ngx_path, ngx_headers)
    ours = send(oca.port, method, our_path, our_headers)
    get_length = None
    if method == "HEAD" and is_multipart(ours):
        get_length = send(oca.port, "GET", our_path, our_headers).header("Content-Length")
    try:
        compare(ngx, ours, method, contents[key], get_length)
    except AssertionError as exc:
        sent = "; ".join(f"{k}: {_short(v)!r}" for k, v in our_headers) or "(no range headers)"
        sent_ngx = "; ".join(f"{k}: {_short(v)!r}" for k, v in ngx_headers) or "(no range headers)"
        raise AssertionError(
            f"{method} {key} (size {FILES[key]}) differs from nginx\n"
            f"  request (ours):  {sent}\n  request (nginx): {sent_ngx}\n"
            f"  nginx: {describe(ngx, method)}\n  ours:  {describe(ours, method)}\n  ({exc})"
        ) from None


# -- keep-alive ----------------------------------------------------------------------------------

KEEPALIVE_SEQUENCE = [
    ("GET", "bytes=0-99", None),
    ("GET", "bytes=1000-", None),
    ("GET", "bytes=0-9,500-599", None),
    ("GET", "bytes=2000000-", None),  # 416 must not end the connection
    ("HEAD", "bytes=-500", None),
    ("GET", "bytes=abc", None),
    ("GET", None, None),
    ("GET", "bytes=0-99", "{etag}"),
    ("GET", "bytes=0-99", '"no-such-etag"'),
    ("HEAD", "bytes=0-9,20-29", None),
    ("GET", "bytes=-1", None),
]


def run_on_one_connection(port: int, path: str) -> list[int]:
    fill = validators(port, path)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.connect()
    sock = conn.sock
    statuses = []
    try:
        for method, rng, if_range in KEEPALIVE_SEQUENCE:
            headers = request_headers(Case("k", rng, if_range), fill)
            reply = send(port, method, path, headers, conn=conn)
            statuses.append(reply.status)
            assert (reply.header("Connection") or "").lower() != "close", (method, rng, reply.status)
            assert conn.sock is sock, f"connection closed after {method} Range={rng!r} ({reply.status})"
    finally:
        conn.close()
    return statuses


def test_keepalive_across_range_requests(nginx, oca):
    ngx = run_on_one_connection(nginx.port, "/" + BIG)
    ours = run_on_one_connection(oca.port, oca.signed_path(BIG))
    assert ours == ngx


# -- no response held back -----------------------------------------------------------------------

PROMPT_S = 0.1  # nginx answers these in well under 1 ms; a corked last segment waits ~200 ms


@pytest.mark.parametrize("key, rng", [
    (BIG, "bytes=0-0"), (BIG, "bytes=0-99,200-299"), ("titles/one.mp4", None), ("titles/one.mp4", "bytes=0-0"),
    ("titles/empty.mp4", None), ("titles/empty.mp4", "bytes=0-0"),
], ids=["big-1-byte-range", "big-multipart", "one-byte-200", "one-byte-206", "empty-200", "empty-range"])
def test_small_responses_are_not_held_back(nginx, oca, key, rng):
    """Each response is complete as soon as it is written: the last bytes must not sit in the
    socket (MSG_MORE / TCP_CORK without a final flush waits for the kernel's 200 ms timer)."""
    def best_of_3(port: int, path: str) -> float:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        times = []
        try:
            for _ in range(3):
                t0 = time.perf_counter()
                send(port, "GET", path, [("Range", rng)] if rng else [], conn=conn)
                times.append(time.perf_counter() - t0)
        finally:
            conn.close()
        return min(times)

    ngx = best_of_3(nginx.port, "/" + key)
    ours = best_of_3(oca.port, oca.signed_path(key))
    assert ours < PROMPT_S, f"GET {key} Range={rng!r}: ours took {ours * 1000:.0f} ms, nginx {ngx * 1000:.1f} ms"
