"""Functional tests of the appliance over real HTTP: ranges (sendfile on and off), validators,
tokens, path tricks, keep-alive and pipelining, and the shapes a well-behaved server must refuse."""
from __future__ import annotations

import email.parser
import http.client
import os
import socket
import time

import pytest

from tests.oca.conftest import raw_exchange

DATA = os.urandom(3 * 1024 * 1024 + 17)
SMALL = b"0123456789" * 10
KEY = "titles/t1/v1/720p.mp4"


@pytest.fixture(scope="module", params=[True, False], ids=["sendfile", "copy"])
def served(request, tmp_path_factory):
    from tests.oca.conftest import Appliance, write_config

    root = tmp_path_factory.mktemp("served")
    app = Appliance(root, write_config(root, sendfile=request.param))
    app.start()
    app.put(DATA, KEY, "ssd")
    app.put(SMALL, "titles/t1/v1/small.m4s", "hdd")
    app.put(b"", "titles/t1/v1/empty.mp4", "hdd")
    app.wait_for(lambda: _get(app, app.path_and_query("titles/t1/v1/empty.mp4"))[0] == 200, what="files served")
    yield app
    app.stop()


def _get(app, target, headers=None, method="GET"):
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    try:
        conn.request(method, target, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


RANGE_CASES = [
    ("bytes=0-0", 206, DATA[0:1]),
    ("bytes=0-99", 206, DATA[0:100]),
    ("bytes=1048576-", 206, DATA[1048576:]),
    ("bytes=-17", 206, DATA[-17:]),
    ("bytes=-99999999", 206, DATA),
    ("bytes=3145000-99999999", 206, DATA[3145000:]),
    ("bytes=99999999-", 416, None),
    ("bytes=-0", 416, None),
    ("bytes=10-5", 416, None),
    ("bytes=x-y", 416, None),
    ("pages=1-2", 200, DATA),
]


@pytest.mark.parametrize("header,status,body", RANGE_CASES, ids=[c[0] for c in RANGE_CASES])
def test_ranges(served, header, status, body):
    got_status, headers, got = _get(served, served.path_and_query(KEY), {"Range": header})
    assert got_status == status
    if status == 206:
        assert got == body
        start = DATA.find(body) if len(body) < len(DATA) else 0
        assert headers["Content-Range"] == f"bytes {start}-{start + len(body) - 1}/{len(DATA)}"
        assert int(headers["Content-Length"]) == len(body)
    elif status == 416:
        assert headers["Content-Range"] == f"bytes */{len(DATA)}"
    else:
        assert got == DATA and "Content-Range" not in headers


def test_whole_file_headers(served):
    status, headers, body = _get(served, served.path_and_query(KEY))
    assert status == 200 and body == DATA
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Type"] == "video/mp4"
    assert headers["ETag"].startswith('"') and len(headers["ETag"]) == 34  # strong, xxh3-128
    assert headers["Last-Modified"].endswith("GMT")
    assert "max-age" in headers["Cache-Control"]


def test_head_has_headers_and_no_body(served):
    status, headers, body = _get(served, served.path_and_query(KEY), {"Range": "bytes=0-9"}, method="HEAD")
    assert status == 206 and body == b"" and headers["Content-Length"] == "10"


def test_multipart_byteranges(served):
    status, headers, body = _get(served, served.path_and_query(KEY), {"Range": "bytes=0-9,2000-2099,-5"})
    assert status == 206
    assert headers["Content-Type"].startswith("multipart/byteranges; boundary=")
    assert int(headers["Content-Length"]) == len(body)
    msg = email.parser.BytesParser().parsebytes(
        b"Content-Type: " + headers["Content-Type"].encode() + b"\r\n\r\n" + body)
    parts = [(p["Content-Range"], p.get_payload(decode=True)) for p in msg.get_payload()]
    size = len(DATA)
    assert parts == [(f"bytes 0-9/{size}", DATA[:10]), (f"bytes 2000-2099/{size}", DATA[2000:2100]),
                     (f"bytes {size - 5}-{size - 1}/{size}", DATA[-5:])]


def test_if_range(served):
    _, headers, _ = _get(served, served.path_and_query(KEY), method="HEAD")
    etag, lm = headers["ETag"], headers["Last-Modified"]
    target = served.path_and_query(KEY)
    assert _get(served, target, {"Range": "bytes=0-9", "If-Range": etag})[0] == 206
    assert _get(served, target, {"Range": "bytes=0-9", "If-Range": lm})[0] == 206
    assert _get(served, target, {"Range": "bytes=0-9", "If-Range": '"stale"'})[:1] == (200,)
    assert _get(served, target, {"Range": "bytes=0-9", "If-Range": "W/" + etag})[0] == 200
    assert _get(served, target, {"Range": "bytes=0-9", "If-Range": "Mon, 01 Jan 2001 00:00:00 GMT"})[0] == 200


def test_hdd_and_empty_files(served):
    assert _get(served, served.path_and_query("titles/t1/v1/small.m4s"), {"Range": "bytes=5-9"})[2] == b"56789"
    status, headers, body = _get(served, served.path_and_query("titles/t1/v1/empty.mp4"), {"Range": "bytes=0-0"})
    assert (status, body, headers["Content-Length"]) == (200, b"", "0")


@pytest.mark.parametrize("mutate,reason", [
    (lambda q: q.split("?")[0], "token-missing"),
    (lambda q: q[:-3] + ("AAA" if not q.endswith("AAA") else "BBB"), "bad-signature"),
    (lambda q: q.replace("720p", "1080p"), "bad-signature"),
    (lambda q: q.replace("k=k1", "k=k7"), "unknown-key"),
    (lambda q: q.replace("e=", "e=x"), "token-malformed"),
], ids=["missing", "forged", "wrong-path", "unknown-key", "malformed"])
def test_token_refusals(served, mutate, reason):
    status, headers, _ = _get(served, mutate(served.path_and_query(KEY)))
    assert status == 403 and headers["X-Oca-Reason"] == reason


def test_expired_and_wrong_prefix(served):
    expired = served.path_and_query(KEY, ttl=-5)
    elsewhere = served.path_and_query(KEY, client="198.51.100.7")
    for _ in range(2):  # the second time the target's signature is memoised: the fast path checks too
        assert _get(served, expired)[1]["X-Oca-Reason"] == "token-expired"
        assert _get(served, elsewhere, {"Range": "bytes=0-9"})[1]["X-Oca-Reason"] == "wrong-client"
    here = served.path_and_query(KEY, client="127.0.0.99")  # same /24 as 127.0.0.1
    assert _get(served, here)[0] == 200


@pytest.mark.parametrize("target", [
    b"/../../etc/passwd", b"/titles/%2e%2e/%2e%2e/etc/passwd", b"/titles/t1/v1/720p.mp4%00", b"/titles//t1",
    b"/.oca/keys.toml", b"/titles/./t1", b"/titles\\t1", b"http://evil/titles/t1", b"/\xc3\xa9",
], ids=["dotdot", "encoded-dots", "encoded-nul", "empty-segment", "dot-dir", "dot-segment", "backslash",
        "absolute-form", "non-ascii"])
def test_path_tricks_are_400(served, target):
    reply = raw_exchange(served.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ")


def test_signed_dot_dir_still_refused(served):
    # Even a validly signed URL cannot name the store's own state.
    assert _get(served, served.path_and_query("titles/x").replace("titles/x", ".oca/keys.toml"))[0] == 400


def test_symlink_out_of_disk_is_never_served(served):
    link = served.ssd / "titles" / "evil.mp4"
    link.symlink_to("/etc/passwd")
    try:
        status, _, body = _get(served, served.path_and_query("titles/evil.mp4"))
        assert status == 404 and b"root:" not in body
    finally:
        link.unlink()


def test_not_held_is_a_fast_404(served):
    status, headers, _ = _get(served, served.path_and_query("titles/none/v1/720p.mp4"))
    assert status == 404 and headers["X-Oca-Reason"] == "not-held"


def test_keep_alive_and_pipelining(served):
    target = served.path_and_query("titles/t1/v1/small.m4s").encode()
    one = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nRange: bytes=%d-%d\r\n\r\n"
    payload = b"".join(one % (i, i) for i in range(3)) + b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    reply = raw_exchange(served.port, payload)
    assert reply.count(b"HTTP/1.1 206 ") == 3 and reply.count(b"HTTP/1.1 200 ") == 1
    bodies = [chunk.split(b"\r\n\r\n", 1)[1][:1] for chunk in reply.split(b"HTTP/1.1 ")[1:4]]
    assert bodies == [b"0", b"1", b"2"]  # in order


def test_http10_closes_unless_keep_alive(served):
    target = served.path_and_query("titles/t1/v1/small.m4s").encode()
    reply = raw_exchange(served.port, b"GET " + target + b" HTTP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(SMALL)


@pytest.mark.parametrize("head,status", [
    (b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nGET /", 400),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n", 400),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    (b"GET /a HTTP/1.1\r\n\r\n", 400),
    (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
    (b"GET /a HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"GARBAGE\r\n\r\n", 400),
], ids=["dup-content-length", "cl-and-te", "chunked-get", "body-smuggles-request", "te-space-before-colon",
        "two-hosts", "no-host", "post", "http2-text", "garbage"])
def test_refused_shapes_and_connection_closed(served, head, status):
    reply = raw_exchange(served.port, head)
    assert reply.startswith(f"HTTP/1.1 {status} ".encode())
    if status != 405:
        assert b"Connection: close" in reply


def test_oversized_headers_431(served):
    head = b"GET /a HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 40000 + b"\r\n\r\n"
    assert raw_exchange(served.port, head).startswith(b"HTTP/1.1 431 ")
    many = b"GET /a HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(3000)) + b"\r\n"
    assert raw_exchange(served.port, many).startswith(b"HTTP/1.1 431 ")


def test_slow_header_times_out_with_408(served):
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n")  # never finishes the head
        started = time.monotonic()
        reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408 ")
        assert sock.recv(4096) == b""  # and closed
        assert time.monotonic() - started < 8


def test_idle_keepalive_connection_is_closed(served):
    with socket.create_connection(("127.0.0.1", served.port), timeout=15) as sock:
        assert sock.recv(10) == b""  # closed by the server after keepalive_timeout_s, no bytes sent


def test_client_vanishing_mid_body_costs_nothing(served):
    """Clients that reset the connection after the first bytes of a 3 MiB body. Whether the server
    was still sending when the RST came (an abort) or the kernel had already taken the whole body
    (a finished 200: with tcp_wmem's max at 4 MiB it can) depends on the machine's buffer sizes,
    so the test asserts what holds either way: every one of them is accounted for (as an abort or
    a finished 200), no connection is left open, and the next request is served."""
    def accounted() -> float:
        return served.metric('oca_requests_total{status="200"}') + served.metric("oca_client_aborts_total")

    before = accounted()
    target = served.path_and_query(KEY).encode()
    for _ in range(5):
        sock = socket.create_connection(("127.0.0.1", served.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(1000)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # RST, most likely while the server still has megabytes to send
    assert _get(served, served.path_and_query(KEY), {"Range": "bytes=0-3"})[2] == DATA[:4]
    served.wait_for(lambda: served.metric("oca_open_connections") == 0, what="connections released")
    served.wait_for(lambda: accounted() >= before + 5, what="every vanished client accounted for")


def test_metrics_and_health(served):
    _get(served, served.path_and_query(KEY), {"Range": "bytes=0-9"})
    text = served.admin("/metrics").decode()
    assert 'oca_requests_total{status="206"}' in text
    assert 'oca_bytes_sent_total{tier="ssd"}' in text
    assert "oca_request_duration_seconds_bucket" in text
    health = served.health()
    assert health["accepting"] and not health["draining"]
    assert {d["tier"] for d in health["disks"]} == {"ssd", "hdd"} and all(d["ok"] for d in health["disks"])
    assert served.admin("/healthz") == b"ok\n"


def test_deep_pipelining_pauses_reading_and_answers_all(served):
    target = served.path_and_query("titles/t1/v1/small.m4s").encode()
    one = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\n\r\n"
    last = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    reply = raw_exchange(served.port, one * 60 + last, timeout=10)
    assert reply.count(b"HTTP/1.1 206 ") == 60 and reply.count(b"HTTP/1.1 200 ") == 1


def test_cors_for_browser_players(served):
    status, headers, _ = _get(served, served.path_and_query(KEY), {"Range": "bytes=0-9", "Origin": "http://player"})
    assert status == 206 and headers["Access-Control-Allow-Origin"] == "*"
    assert "Content-Range" in headers["Access-Control-Expose-Headers"]
    status, headers, _ = _get(served, "/titles/x.mp4", {"Origin": "http://player"})
    assert status == 403 and headers["Access-Control-Allow-Origin"] == "*"  # the player can read why
    reply = raw_exchange(served.port, b"OPTIONS /titles/x.mp4 HTTP/1.1\r\nHost: x\r\nOrigin: http://player\r\n"
                                      b"Access-Control-Request-Headers: range\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 204 ") and b"Access-Control-Allow-Headers: Range, If-Range" in reply
    assert b"\r\nContent-Length:" not in reply


def test_prefix_check_on_one_keepalive_connection(served):
    """The fast path remembers which token prefix a connection's client is inside: a URL bound to
    another prefix on the same connection is still refused."""
    here = served.path_and_query(KEY, client="127.0.0.1")
    elsewhere = served.path_and_query("titles/t1/v1/small.m4s", client="198.51.100.7")
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        for target, status in ((here, 206), (here, 206), (elsewhere, 403), (elsewhere, 403), (here, 206)):
            conn.request("GET", target, headers={"Range": "bytes=0-9"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == status
    finally:
        conn.close()


def test_the_fast_path_counts_what_the_general_path_counts(served):
    """Range requests on one keep-alive connection through one URL: the first is answered by the
    general path (it checks the token and fills the memo), the rest by the one-call fast path (with
    sendfile on); every one counts a 206, a hit, its bytes and its latency."""
    names = ('oca_requests_total{status="206"}', 'oca_cache_lookups_total{result="hit"}',
             'oca_bytes_sent_total{tier="ssd"}', "oca_request_duration_seconds_count")
    before = [served.metric(n) for n in names]
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    target = served.path_and_query(KEY)
    try:
        for header, body in (("bytes=0-99", DATA[:100]), ("bytes=100-299", DATA[100:300]), ("bytes=-50", DATA[-50:]),
                             ("bytes=3145000-", DATA[3145000:]), ("bytes=7-7", DATA[7:8])):
            conn.request("GET", target, headers={"Range": header})
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (206, body)
    finally:
        conn.close()
    after = [served.metric(n) for n in names]
    assert [a - b for a, b in zip(after, before)] == [5, 5, 100 + 200 + 50 + len(DATA) - 3145000 + 1, 5]
