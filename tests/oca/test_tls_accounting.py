"""The HTTPS hot path answers and accounts as the plain one: the same requests on one keep-alive
connection to each port of one appliance give the same access-log lines (but the time fields) and
move the same counters (responses by status, bytes by tier, hits, durations). The requests cover
both of the TLS writer's paths — the fast one (`TlsConnection._fast`: small and large plain
ranges, whole files, and a large body the transport pauses, which the general writer finishes)
and the general one (multipart, X-Request-Id, HEAD, 416, 403) — with a client that verifies the
chain."""
from __future__ import annotations

import http.client
import json
import os
import re

import pytest

from tests.oca.test_tls import NAME_A, TlsConn, client_context, put, tls_section
from tests.support.tlsca import TestCA

pytestmark = pytest.mark.timeout(120)

KEY = "titles/acct/v.mp4"
DATA = os.urandom(6 * (1 << 20) + 4321)
REQUESTS = [  # (method, range or None, extra headers)
    ("GET", None, {}),  # the whole file: larger than the transport's high-water mark, so it pauses
    ("GET", "bytes=0-16383", {}),  # W3's request
    ("GET", "bytes=1000000-2048575", {}),  # W2's
    ("GET", "bytes=-100", {}),
    ("GET", "bytes=6000000-", {}),
    ("GET", "bytes=0-9,100-109", {}),  # multipart: the general path
    ("GET", "bytes=5-15", {"X-Request-Id": "acct-1"}),  # a request id: the general path
    ("HEAD", "bytes=0-99", {}),
    ("GET", f"bytes={len(DATA)}-", {}),  # 416
    ("GET", "bytes=0-0", {}),
]
COUNTERS = re.compile(r"^(oca_requests_total|oca_bytes_sent_total|oca_cache_lookups_total|"
                      r"oca_request_duration_seconds_count)(\{[^}]*\})? (\S+)$")


@pytest.fixture
def ca(tmp_path) -> TestCA:
    return TestCA(tmp_path / "ca")


def counters(app) -> dict[str, float]:
    out = {}
    for line in app.admin("/metrics").decode().splitlines():
        m = COUNTERS.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


def run(conn: http.client.HTTPConnection, path: str) -> list[tuple[int, bytes]]:
    answers = []
    for method, rng, extra in REQUESTS:
        conn.request(method, path, headers={**({"Range": rng} if rng else {}), **extra})
        resp = conn.getresponse()
        answers.append((resp.status, re.sub(rb"--[0-9a-f]{16,}", b"--BOUNDARY", resp.read())))  # one per response
    conn.request("GET", "/" + KEY)  # no token: 403
    resp = conn.getresponse()
    answers.append((resp.status, resp.read()))
    return answers


def test_same_lines_and_counters_over_https_as_over_http(make_appliance, ca, tmp_path):
    log_path = tmp_path / "access.log"
    chain, key = ca.issue(NAME_A)
    app = make_appliance(extra=tls_section((chain, key)), start=False)
    text = app.config_path.read_text()
    app.config_path.write_text(text.replace("[http]\n", f'[http]\naccess_log = "{log_path}"\n', 1))
    app.start()
    put(app, ca, DATA, KEY)
    path = app.path_and_query(KEY)

    c0 = counters(app)
    plain = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    plain_answers = run(plain, path)
    plain.close()
    c1 = counters(app)
    tls = TlsConn(NAME_A, app.tls_port, context=client_context(ca), timeout=10)
    tls_answers = run(tls, path)
    assert tls.sock.version() in ("TLSv1.2", "TLSv1.3")  # one connection throughout, over TLS
    tls.close()
    c2 = counters(app)

    assert tls_answers == plain_answers
    assert plain_answers[0] == (200, DATA) and plain_answers[2] == (206, DATA[1000000:2048576])
    assert [s for s, _ in plain_answers] == [200, 206, 206, 206, 206, 206, 206, 206, 416, 206, 403]
    assert delta(c2, c1) == delta(c1, c0)
    file_bytes = len(DATA) + 16384 + 1048576 + 100 + (len(DATA) - 6000000) + 20 + 11 + 1  # HEAD, 416, 403: none
    assert delta(c1, c0)['oca_bytes_sent_total{tier="ssd"}'] == file_bytes

    assert app.stop() == 0  # writes every held line (one worker: in the order answered)
    n = len(REQUESTS) + 1
    lines = [json.loads(line) for line in log_path.read_text().splitlines()[-2 * n:]]
    assert [line["status"] for line in lines[:n]] == [s for s, _ in plain_answers]
    for ours, theirs in zip(lines[:n], lines[n:]):
        for line in (ours, theirs):
            del line["ts"], line["ms"]
        assert theirs == ours
