"""The range differential test (test_nginx_differential.py) repeated over HTTPS: the appliance and
nginx with `ssl` serve the same files on the same certificate (a throwaway CA's, trusted by the
client, which verifies the chain and the address), and must answer every Range / If-Range case
alike. Under TLS the appliance's body path is pread into a reused buffer (no sendfile), so one run
covers it; keep-alive and "no response held back" are checked over TLS as well."""
from __future__ import annotations

import http.client
import ssl
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.oca import test_nginx_differential as plain  # noqa: E402
from tests.support.nginx import NginxServer  # noqa: E402
from tests.support.oca_proc import OcaProcess  # noqa: E402
from tests.support.tlsca import TestCA  # noqa: E402

pytestmark = pytest.mark.timeout(300)
data_dir = plain.data_dir  # the same files (module-scoped fixtures, imported)
contents = plain.contents


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("tls-ca"))


@pytest.fixture(scope="module")
def certificate(ca):
    return ca.issue("localhost", "127.0.0.1")


@pytest.fixture(scope="module")
def client_tls(ca) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.root_path))  # verifies the chain and 127.0.0.1


@pytest.fixture(scope="module")
def nginx(data_dir, certificate):
    with NginxServer(data_dir, workers=1, ssl_cert=certificate[0], ssl_key=certificate[1]) as server:
        yield server


@pytest.fixture(scope="module")
def oca(data_dir, certificate):
    with OcaProcess(data_dir, workers=1, tls_cert=certificate[0], tls_key=certificate[1]) as server:
        yield server


@pytest.mark.parametrize("key, case, method", list(plain._requests()))
def test_same_answer_as_nginx_over_https(nginx, oca, contents, client_tls, key, case, method):
    ngx_path, our_path = "/" + key, oca.signed_path(key)
    ngx_headers = plain.request_headers(case, plain.validators(nginx.port, ngx_path, tls=client_tls))
    our_headers = plain.request_headers(case, plain.validators(oca.tls_port, our_path, tls=client_tls))
    ngx = plain.send(nginx.port, method, ngx_path, ngx_headers, tls=client_tls)
    ours = plain.send(oca.tls_port, method, our_path, our_headers, tls=client_tls)
    get_length = None
    if method == "HEAD" and plain.is_multipart(ours):
        get_length = plain.send(oca.tls_port, "GET", our_path, our_headers, tls=client_tls).header("Content-Length")
    try:
        plain.compare(ngx, ours, method, contents[key], get_length)
    except AssertionError as exc:
        raise AssertionError(f"{method} {key} {case.id} over https differs from nginx\n"
                             f"  nginx: {plain.describe(ngx, method)}\n  ours:  {plain.describe(ours, method)}\n"
                             f"  ({exc})") from None


def _one_connection(port: int, path: str, tls: ssl.SSLContext) -> list[int]:
    fill = plain.validators(port, path, tls=tls)
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=tls)
    conn.connect()
    sock = conn.sock
    statuses = []
    try:
        for method, rng, if_range in plain.KEEPALIVE_SEQUENCE:
            reply = plain.send(port, method, path, plain.request_headers(plain.Case("k", rng, if_range), fill),
                               conn=conn)
            statuses.append(reply.status)
            assert conn.sock is sock, f"connection closed after {method} Range={rng!r} ({reply.status})"
    finally:
        conn.close()
    return statuses


def test_keepalive_across_range_requests_over_https(nginx, oca, client_tls):
    assert _one_connection(oca.tls_port, oca.signed_path(plain.BIG), client_tls) == \
        _one_connection(nginx.port, "/" + plain.BIG, client_tls)


@pytest.mark.parametrize("key, rng", [(plain.BIG, "bytes=0-0"), (plain.BIG, "bytes=0-99,200-299"),
                                      ("titles/one.mp4", None), ("titles/empty.mp4", None)],
                         ids=["big-1-byte-range", "big-multipart", "one-byte-200", "empty-200"])
def test_small_responses_are_not_held_back_over_https(oca, client_tls, key, rng):
    conn = http.client.HTTPSConnection("127.0.0.1", oca.tls_port, timeout=30, context=client_tls)
    times = []
    try:
        for _ in range(3):
            t0 = time.perf_counter()
            plain.send(oca.tls_port, "GET", oca.signed_path(key), [("Range", rng)] if rng else [], conn=conn)
            times.append(time.perf_counter() - t0)
    finally:
        conn.close()
    assert min(times) < plain.PROMPT_S
