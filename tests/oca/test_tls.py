"""HTTPS on the appliance, with real clients against a real `oca serve`: a throwaway CA (root →
intermediate → leaf, made with `cryptography`), curl and Python verifying the chain, SNI among
several certificates, TLS 1.2/1.3 AEAD only, ALPN, bodies large and small, certificate reload
without dropping a connection, expiry in /metrics and /v1/health, and the bad inputs — plain HTTP
to the TLS port, a stalled or reset handshake, an unknown server name — closed and counted."""
from __future__ import annotations

import hashlib
import http.client
import os
import signal
import socket
import ssl
import struct
import subprocess
import time

import pytest

from contracts.structconf import ConfigError
from oca import config as oca_config
from oca.core.tls import (ExpiryState, HandshakeOutcome, HelloState, SniPolicy, choose_certificate, classify_failure,
                          expiry_state, scan_client_hello, sni_policy)
from tests.support.tlsca import TestCA

pytestmark = pytest.mark.timeout(120)

NAME_A, NAME_B = "ams-1.oca.test", "ams-2.oca.test"


# ---- core (table-driven) ---------------------------------------------------------------------

NAMES = [("ams-1.oca.test", "127.0.0.1"), ("*.oca.test",), ("ams-2.oca.test",)]


REFUSE, SERVE_FIRST = SniPolicy(0, None), SniPolicy(0, 0)


@pytest.mark.parametrize("server_name, policy, expected", [
    (None, REFUSE, (0, False)),
    ("ams-1.oca.test", REFUSE, (0, True)),
    ("AMS-1.OCA.TEST.", REFUSE, (0, True)),
    ("ams-2.oca.test", REFUSE, (2, True)),  # the exact name wins over an earlier wildcard
    ("ams-9.oca.test", REFUSE, (1, True)),
    ("a.b.oca.test", REFUSE, (None, False)),  # a wildcard covers one label
    ("oca.test", REFUSE, (None, False)),
    ("elsewhere.example", REFUSE, (None, False)),
    ("elsewhere.example", SERVE_FIRST, (0, False)),
    ("elsewhere.example", SniPolicy(2, 2), (2, False)),
    (None, SniPolicy(2, None), (2, False)),
    ("127.0.0.1", REFUSE, (0, False)),  # an address literal (wrk sends one): as no SNI
], ids=["no-sni", "exact", "case-and-dot", "exact-beats-wildcard", "wildcard", "wildcard-one-label",
        "wildcard-not-apex", "unknown-refused", "unknown-default", "unknown-marked-default", "no-sni-marked-default",
        "address-literal"])
def test_choose_certificate(server_name, policy, expected):
    assert tuple(choose_certificate(server_name, NAMES, policy)) == expected


@pytest.mark.parametrize("count, default, reject, expected", [
    (1, None, None, (0, 0)),  # one certificate: the obvious default, never a refusal
    (3, None, None, (0, None)),  # several, none marked: unknown names refused
    (3, 2, None, (2, 2)),  # several, one marked default: it answers unknown names and clients naming none
    (1, None, True, (0, None)),  # reject_unknown_sni = true: refused whatever the default
    (3, 2, True, (2, None)),
    (3, None, False, (0, 0)),  # reject_unknown_sni = false: the first answers
], ids=["one", "several", "several-marked", "one-reject", "marked-reject", "several-never-reject"])
def test_sni_policy(count, default, reject, expected):
    assert tuple(sni_policy(count, default, reject)) == expected


def _hello(name: str | None, **kw) -> bytes:
    """A real client's first bytes (ssl with memory BIOs), SNI `name` (None: no SNI)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for k, v in kw.items():
        setattr(ctx, k, v)
    out = ssl.MemoryBIO()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname=name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


HELLO_A = _hello("ams-1.oca.test")
HELLO_12 = _hello("ams-2.oca.test", maximum_version=ssl.TLSVersion.TLSv1_2)


@pytest.mark.parametrize("data, expected", [
    (HELLO_A, (HelloState.READ, "ams-1.oca.test")),
    (HELLO_12, (HelloState.READ, "ams-2.oca.test")),
    (_hello(None), (HelloState.READ, None)),
    (HELLO_A[:1], (HelloState.MORE, None)),
    (HELLO_A[:4], (HelloState.MORE, None)),
    (HELLO_A[:-1], (HelloState.MORE, None)),
    (b"", (HelloState.MORE, None)),
    (b"GET / HTTP/1.1\r\n", (HelloState.NOT_TLS, None)),
    (b"G", (HelloState.NOT_TLS, None)),
    (b"\x80\x2e\x01\x03\x01", (HelloState.NOT_TLS, None)),  # an SSLv2-style hello
    (b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00", (HelloState.OPAQUE, None)),  # not a ClientHello
    (b"\x16\x03\x01\x00\x08\x01\x00\x00\x10\x03\x03\x00\x00", (HelloState.OPAQUE, None)),  # spans records
    (HELLO_A[:5] + HELLO_A[5:9] + b"\xff" * (len(HELLO_A) - 9), (HelloState.OPAQUE, None)),  # garbage inside
    (b"\x16\x03\x01\x7f\xff", (HelloState.OPAQUE, None)),  # a record longer than TLS allows
], ids=["tls13", "tls12", "no-sni", "one-byte", "record-header-cut", "record-cut", "nothing", "http", "http-first-byte",
        "sslv2", "server-hello", "hello-spans-records", "garbage", "oversized-record"])
def test_scan_client_hello(data, expected):
    assert tuple(scan_client_hello(data)) == expected


@pytest.mark.parametrize("exc_type, reason, message, sni, expected", [
    ("SSLError", "HTTP_REQUEST", "[SSL: HTTP_REQUEST] http request", False, HandshakeOutcome.PLAIN_HTTP),
    ("ConnectionAbortedError", None, "SSL handshake is taking longer than 1.0 seconds", False, HandshakeOutcome.TIMEOUT),
    ("ConnectionResetError", None, "Connection lost", False, HandshakeOutcome.RESET),
    ("SSLError", "CALLBACK_FAILED", "callback failed", True, HandshakeOutcome.UNKNOWN_SNI),
    ("SSLError", "NO_SHARED_CIPHER", "no shared cipher", False, HandshakeOutcome.FAILED),
], ids=["plain-http", "timeout", "reset", "unknown-sni", "other"])
def test_classify_failure(exc_type, reason, message, sni, expected):
    assert classify_failure(exc_type, reason, message, sni) is expected


@pytest.mark.parametrize("left_s, expected", [(-1, ExpiryState.EXPIRED), (10, ExpiryState.EXPIRING),
                                              (100, ExpiryState.OK)], ids=["expired", "expiring", "ok"])
def test_expiry_state(left_s, expected):
    assert expiry_state(1000 + left_s, 1000, 50) is expected


# ---- helpers ---------------------------------------------------------------------------------

@pytest.fixture
def ca(tmp_path) -> TestCA:
    return TestCA(tmp_path / "ca")


def tls_section(*certs: tuple, **options) -> str:
    opts = {"port": 0, "handshake_timeout_s": 1.0, **options}
    text = "\n[tls]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in opts.items())
    for chain, key in certs:
        text += f'\n[[tls.certificates]]\ncert = "{chain}"\nkey = "{key}"\n'
    return text


def _toml(v) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else f'"{v}"' if isinstance(v, str) else str(v)


def client_context(ca: TestCA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.root_path))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class TlsConn(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 whatever the host name (which is the SNI and what the chain must name)."""

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def get(conn: http.client.HTTPConnection, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    return resp.status, dict(resp.getheaders()), resp.read()


def metric(app, outcome: str) -> float:
    for line in app.admin("/metrics").decode().splitlines():
        if line.startswith(f'oca_tls_handshakes_total{{outcome="{outcome}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(outcome)


def wait_metric(app, outcome: str, at_least: float, timeout: float = 5.0) -> None:
    app.wait_for(lambda: metric(app, outcome) >= at_least, timeout, f"tls {outcome} >= {at_least}")


def put(app, ca: TestCA, data: bytes, key: str, name: str = NAME_A) -> None:
    """Pre-position a file and wait until the worker's index view holds it (polled every second)."""
    app.put(data, key)
    path = app.path_and_query(key)

    def served() -> bool:
        conn = TlsConn(name, app.tls_port, context=client_context(ca), timeout=10)
        try:
            conn.request("HEAD", path)
            return conn.getresponse().status == 200
        finally:
            conn.close()

    app.wait_for(served, 10, f"{key} served")


@pytest.fixture
def tls_app(make_appliance, ca):
    """One appliance serving NAME_A (and 127.0.0.1) over TLS beside its plain port, with a file."""
    chain, key = ca.issue(NAME_A, "127.0.0.1")
    app = make_appliance(extra=tls_section((chain, key)))
    data = os.urandom(3 * (1 << 20) + 12345)
    put(app, ca, data, "titles/t/v.mp4")
    app.data = data
    app.ca = ca
    return app


# ---- real clients ----------------------------------------------------------------------------

def test_curl_verifies_the_chain(tls_app, ca):
    path = tls_app.path_and_query("titles/t/v.mp4")
    url = f"https://{NAME_A}:{tls_app.tls_port}{path}"
    resolve = f"{NAME_A}:{tls_app.tls_port}:127.0.0.1"
    whole = subprocess.run(["curl", "-sS", "--fail", "--cacert", str(ca.root_path), "--resolve", resolve, url],
                           capture_output=True, timeout=30)
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout == tls_app.data
    ranged = subprocess.run(["curl", "-sS", "--fail", "--cacert", str(ca.root_path), "--resolve", resolve,
                             "-r", "1000-1999", "-w", "%{http_code} %{http_version}", "-o", "/dev/null", url],
                            capture_output=True, text=True, timeout=30)
    assert ranged.stdout == "206 1.1", ranged.stderr
    # An untrusted chain is refused by the client (curl exit 60: peer certificate cannot be authenticated).
    untrusted = subprocess.run(["curl", "-sS", "--resolve", resolve, url], capture_output=True, timeout=30)
    assert untrusted.returncode == 60


def test_python_client_keepalive_ranges_alpn(tls_app, ca):
    conn = TlsConn(NAME_A, tls_app.tls_port, context=client_context(ca), timeout=10)
    path = tls_app.path_and_query("titles/t/v.mp4")
    data = tls_app.data
    try:
        status, headers, body = get(conn, path)
        assert (status, body) == (200, data)
        sock = conn.sock
        assert sock.selected_alpn_protocol() == "http/1.1"
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        cipher = sock.cipher()[0]
        assert "GCM" in cipher or "CHACHA20" in cipher
        for rng, want in [("bytes=0-0", data[:1]), ("bytes=-100", data[-100:]), ("bytes=1000-", data[1000:]),
                          ("bytes=2000000-2999999", data[2000000:3000000])]:
            status, headers, body = get(conn, path, {"Range": rng})
            assert (status, body) == (206, want), rng
            assert conn.sock is sock  # one connection throughout
        status, headers, body = get(conn, path, {"Range": "bytes=0-9,100-109"})
        assert status == 206 and headers["Content-Type"].startswith("multipart/byteranges")
        assert data[:10] in body and data[100:110] in body
        status, headers, body = get(conn, path, {"Range": f"bytes={len(data)}-"})
        assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"
        status, _, _ = get(conn, "/titles/t/v.mp4")  # no token
        assert status == 403
        assert conn.sock is sock
    finally:
        conn.close()
    # the same file over the plain port, beside
    plain = http.client.HTTPConnection("127.0.0.1", tls_app.port, timeout=10)
    assert get(plain, path)[2] == data
    plain.close()


def test_slow_reader_gets_every_byte(tls_app, ca):
    """Flow control: a client that reads slowly pauses the pump; the body still arrives whole."""
    big = os.urandom(24 << 20)
    put(tls_app, ca, big, "titles/t/big.mp4")
    ctx = client_context(ca)
    raw = socket.create_connection(("127.0.0.1", tls_app.tls_port), timeout=20)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    sock = ctx.wrap_socket(raw, server_hostname=NAME_A)
    path = tls_app.path_and_query("titles/t/big.mp4")
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    got = bytearray()
    time.sleep(1.0)  # let the server fill every buffer and pause
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        got += chunk
        head_end = got.find(b"\r\n\r\n")
        if head_end >= 0 and len(got) - head_end - 4 >= len(big):
            break
    sock.close()
    body = bytes(got[got.find(b"\r\n\r\n") + 4:])
    assert hashlib.sha256(body).digest() == hashlib.sha256(big).digest()


@pytest.mark.parametrize("version, ciphers", [
    (ssl.TLSVersion.TLSv1_1, None), (ssl.TLSVersion.TLSv1_2, "AES128-SHA"), (ssl.TLSVersion.TLSv1_2, "AES128-GCM-SHA256"),
], ids=["tls1.1", "cbc-cipher", "rsa-key-exchange"])
def test_old_versions_and_non_aead_ciphers_refused(tls_app, ca, version, ciphers):
    ctx = client_context(ca)
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers + ":@SECLEVEL=0")
    else:
        try:
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        except ssl.SSLError:
            pass
    with socket.create_connection(("127.0.0.1", tls_app.tls_port), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            ctx.wrap_socket(raw, server_hostname=NAME_A)
    wait_metric(tls_app, "failed", 1)


def test_sni_picks_the_certificate(make_appliance, ca):
    a = ca.issue(NAME_A)
    b = ca.issue(NAME_B, rsa=True)
    app = make_appliance(extra=tls_section(a, b))
    put(app, ca, b"x" * 1000, "titles/t/a.mp4")
    path = app.path_and_query("titles/t/a.mp4")
    for name in (NAME_A, NAME_B):
        conn = TlsConn(name, app.tls_port, context=client_context(ca), timeout=10)
        assert get(conn, path)[0] == 200
        assert ("DNS", name) in conn.sock.getpeercert()["subjectAltName"]
        conn.close()
    # No SNI (a client given an address): the first certificate.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(str(ca.root_path))
    with socket.create_connection(("127.0.0.1", app.tls_port), timeout=5) as raw:
        with ctx.wrap_socket(raw) as s:
            assert ("DNS", NAME_A) in s.getpeercert()["subjectAltName"]
    # An unknown name, several certificates and none marked default: the unrecognized_name alert
    # (read by the listener from the ClientHello, before OpenSSL), then the connection is closed.
    with socket.create_connection(("127.0.0.1", app.tls_port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError) as refused:
            client_context(ca).wrap_socket(raw, server_hostname="nobody.example")
        assert refused.value.reason == "TLSV1_UNRECOGNIZED_NAME"
    resolve = f"nobody.example:{app.tls_port}:127.0.0.1"
    curl = subprocess.run(["curl", "-sS", "--cacert", str(ca.root_path), "--resolve", resolve,
                           f"https://nobody.example:{app.tls_port}{path}"], capture_output=True, text=True, timeout=30)
    assert curl.returncode == 35 and "unrecognized name" in curl.stderr, curl.stderr
    wait_metric(app, "unknown_sni", 2)
    assert metric(app, "failed") == 0


def _peer_names(port: int, ca: TestCA, server_name: str | None) -> list[str]:
    """The DNS names of the certificate the appliance presents to a client naming `server_name`
    (None: no SNI); the chain is verified, the name is not (it is what the test looks at)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(str(ca.root_path))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as s:
            return [v for k, v in s.getpeercert()["subjectAltName"] if k == "DNS"]


@pytest.mark.parametrize("setup", ["one-certificate", "marked-default", "reject-always"])
def test_unknown_names_follow_the_default_certificate(make_appliance, ca, setup):
    """One certificate, or one marked `default = true`: it answers unknown names (and clients naming
    none); `reject_unknown_sni = true` refuses unknown names even then."""
    a, b = ca.issue(NAME_A), ca.issue(NAME_B)
    if setup == "one-certificate":
        extra = tls_section(a)
    elif setup == "marked-default":
        extra = tls_section(a, b) + "default = true\n"  # on the last [[tls.certificates]]: NAME_B's
    else:
        extra = tls_section(a, reject_unknown_sni=True)
    app = make_appliance(extra=extra)
    default = NAME_B if setup == "marked-default" else NAME_A
    assert _peer_names(app.tls_port, ca, None) == [default]
    assert _peer_names(app.tls_port, ca, NAME_A) == [NAME_A]
    if setup == "reject-always":
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
            _peer_names(app.tls_port, ca, "nobody.example")
        wait_metric(app, "unknown_sni", 1)
    else:
        assert _peer_names(app.tls_port, ca, "nobody.example") == [default]
        # A client that checks the name refuses the certificate itself, as it would nginx's.
        with socket.create_connection(("127.0.0.1", app.tls_port), timeout=5) as raw:
            with pytest.raises(ssl.SSLCertVerificationError):
                client_context(ca).wrap_socket(raw, server_hostname="nobody.example")
        assert metric(app, "unknown_sni") == 0


def test_two_default_certificates_are_a_config_error(tmp_path, ca):
    from tests.oca.conftest import write_config

    extra = tls_section(ca.issue(NAME_A), ca.issue(NAME_B)).replace('key = "', 'default = true\nkey = "')
    with pytest.raises(ConfigError, match=r"tls.certificates\[1\].default: only one certificate can be the default"):
        oca_config.load(write_config(tmp_path, extra=extra))


# ---- bad input -------------------------------------------------------------------------------

def read_to_eof(s: socket.socket) -> bytes:
    got = b""
    while chunk := s.recv(65536):
        got += chunk
    return got


def test_plain_http_to_the_tls_port_gets_a_clear_text_400(tls_app):
    """As nginx answers: a 400 in clear text saying what happened, then the server closes."""
    path = tls_app.path_and_query("titles/t/v.mp4")
    with socket.create_connection(("127.0.0.1", tls_app.tls_port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        reply = read_to_eof(s)  # the server closes (the socket's timeout would fail this otherwise)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n"), reply[:100]
    assert b"\r\nConnection: close" in head and b"\r\nX-Oca-Reason: plain-http-to-tls-port" in head
    assert b"The plain HTTP request was sent to HTTPS port" in body
    assert f"Content-Length: {len(body)}".encode() in head
    curl = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                           f"http://127.0.0.1:{tls_app.tls_port}{path}"], capture_output=True, text=True, timeout=30)
    assert curl.stdout == "400", curl.stderr
    wait_metric(tls_app, "plain_http", 2)
    assert metric(tls_app, "reset") == 0 and metric(tls_app, "failed") == 0


def test_a_request_in_pieces_still_gets_its_400(tls_app):
    """The first byte decides; the rest of the request, sent later, is read and dropped, so closing
    does not reset the connection before the client reads the answer."""
    with socket.create_connection(("127.0.0.1", tls_app.tls_port), timeout=5) as s:
        s.sendall(b"G")
        assert s.recv(12) == b"HTTP/1.1 400"
        s.sendall(b"ET / HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"p" * 100_000 + b"\r\n\r\n")
        assert b"plain HTTP request" in read_to_eof(s)
    wait_metric(tls_app, "plain_http", 1)


def _send_hello(s: socket.socket, sent: str) -> None:
    """Part of a handshake: nothing, half a ClientHello (the listener waits for the rest), or a
    whole one (then the server's first flight is read: OpenSSL has the handshake, and waits)."""
    hello = _hello(NAME_A)
    if sent == "half-hello":
        s.sendall(hello[:len(hello) // 2])
    elif sent == "whole-hello":
        s.sendall(hello)
        assert s.recv(5)[:1] == b"\x16"  # the ServerHello's record


@pytest.mark.parametrize("sent", ["nothing", "half-hello", "whole-hello"])
def test_stalled_handshake_is_closed_at_the_deadline_and_counted(tls_app, sent):
    """handshake_timeout_s (1 s here) covers the whole handshake, before and after the ClientHello.
    The client's socket waits 5 s: a server that did not close would fail the test."""
    before = metric(tls_app, "timeout")
    with socket.create_connection(("127.0.0.1", tls_app.tls_port), timeout=5) as s:
        _send_hello(s, sent)
        try:
            read_to_eof(s)
        except ConnectionResetError:
            pass
    wait_metric(tls_app, "timeout", before + 1)
    assert metric(tls_app, "reset") == 0 and metric(tls_app, "failed") == 0


@pytest.mark.parametrize("sent", ["half-hello", "whole-hello"])
def test_reset_mid_handshake_is_counted(tls_app, sent):
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", tls_app.tls_port), timeout=5)
        _send_hello(s, sent)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
        s.close()
    wait_metric(tls_app, "reset", 3)
    assert metric(tls_app, "timeout") == 0 and metric(tls_app, "failed") == 0
    assert tls_app.proc.poll() is None
    # and the listener still serves
    with socket.create_connection(("127.0.0.1", tls_app.tls_port), timeout=5) as raw:
        client_context(tls_app.ca).wrap_socket(raw, server_hostname=NAME_A).close()


def test_idle_after_handshake_gets_408(tls_app, ca):
    """After the handshake, the plain protocol's header timeout applies as it does on port 80."""
    with socket.create_connection(("127.0.0.1", tls_app.tls_port), timeout=5) as raw:
        s = client_context(ca).wrap_socket(raw, server_hostname=NAME_A)
        s.sendall(b"GET / HTTP/1.1\r\nHo")
        reply = s.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408"), reply[:80]


# ---- operations ------------------------------------------------------------------------------

def test_reload_keeps_connections_and_serves_the_new_certificate(tls_app, ca):
    path = tls_app.path_and_query("titles/t/v.mp4")
    conn = TlsConn(NAME_A, tls_app.tls_port, context=client_context(ca), timeout=10)
    assert get(conn, path, {"Range": "bytes=0-9"})[0] == 206
    old_serial = conn.sock.getpeercert()["serialNumber"]
    ca.issue(NAME_A, "127.0.0.1")  # renewed in place (same file names)
    tls_app.proc.send_signal(signal.SIGHUP)
    tls_app.wait_for(lambda: tls_app.log_events("tls-reloaded"), 10, "tls-reloaded")
    # the open connection goes on with its session
    assert get(conn, path, {"Range": "bytes=10-19"})[2] == tls_app.data[10:20]
    conn.close()
    fresh = TlsConn(NAME_A, tls_app.tls_port, context=client_context(ca), timeout=10)
    assert get(fresh, path, {"Range": "bytes=0-9"})[0] == 206
    assert fresh.sock.getpeercert()["serialNumber"] != old_serial
    fresh.close()


def test_changed_files_are_picked_up_without_a_signal(make_appliance, ca):
    chain, key = ca.issue(NAME_A)
    app = make_appliance(extra=tls_section((chain, key), reload_check_s=0.2))
    ca.issue(NAME_A)
    app.wait_for(lambda: app.log_events("tls-reloaded"), 10, "tls-reloaded")
    chain.write_text("not a certificate")  # a broken renewal: the last good contexts stay
    app.wait_for(lambda: app.log_events("tls-reload-failed"), 10, "tls-reload-failed")
    with socket.create_connection(("127.0.0.1", app.tls_port), timeout=5) as raw:
        client_context(ca).wrap_socket(raw, server_hostname=NAME_A).close()


def test_expiry_in_metrics_and_health(make_appliance, ca):
    app = make_appliance(extra=tls_section(ca.issue(NAME_A, days=90)))
    expiry = next(float(line.rsplit(" ", 1)[1]) for line in app.admin("/metrics").decode().splitlines()
                  if line.startswith("oca_tls_cert_expiry_seconds{"))
    assert 89 * 86400 < expiry <= 90 * 86400
    health = app.health()
    tls = health["tls"]
    assert tls["port"] == app.tls_port and tls["body_path"] == "userspace"
    assert tls["ktls"]["available"] is False and tls["ktls"]["missing"]
    assert tls["warnings"] == [] and "tls-certificate" not in health["degraded"]
    soon = make_appliance(extra=tls_section(ca.issue(NAME_B, days=3)))
    health = soon.health()
    assert health["tls"]["certificates"][0]["state"] == "expiring"
    assert "expires in" in health["tls"]["warnings"][0]
    assert "tls-certificate" in health["degraded"]


def test_tls_only(make_appliance, ca):
    app = make_appliance(extra=tls_section(ca.issue(NAME_A, "127.0.0.1"), plain_port=False))
    put(app, ca, b"y" * 100, "titles/t/y.mp4")
    conn = TlsConn(NAME_A, app.tls_port, context=client_context(ca), timeout=10)
    assert get(conn, app.path_and_query("titles/t/y.mp4"))[2] == b"y" * 100
    conn.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", app.port), timeout=2).close()


@pytest.mark.parametrize("extra, error", [
    ("\n[tls]\nport = 0\n", "tls.certificates"),
    ('\n[tls]\n[[tls.certificates]]\ncert = "/nonexistent.pem"\nkey = "/nonexistent.key"\n', None),
    ('\n[tls]\nciphers = "NOPE"\n[[tls.certificates]]\ncert = "a"\nkey = "b"\n', "tls.ciphers"),
], ids=["no-certificates", "missing-files-at-start", "bad-ciphers"])
def test_config_errors(tmp_path, extra, error):
    from tests.oca.conftest import write_config

    cfg = write_config(tmp_path, extra=extra)
    if error is None:  # parses; the worker refuses to start on files it cannot read (check-config says so)
        assert oca_config.load(cfg).tls is not None
        return
    with pytest.raises(ConfigError, match=error):
        oca_config.load(cfg)
