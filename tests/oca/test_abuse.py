"""Abuse the appliance can't be hurt by: thousands of idle connections (bounded memory, still
serving, all shed by the header timeout), a flood of junk requests, slow header dribbles."""
from __future__ import annotations

import http.client
import resource
import socket
import time

from tests.oca.conftest import os_rss_kb
from tests.support import worker_pids_of

IDLE = 10_000


def _get(app, target):
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    try:
        conn.request("GET", target)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_ten_thousand_idle_connections(make_appliance):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, IDLE + 1000)), hard))
    app = make_appliance(start=False)
    # Long enough to hold them all at once, short enough to watch them shed.
    app.config_path.write_text(app.config_path.read_text().replace("header_timeout_s = 1.0", "header_timeout_s = 12.0"))
    app.start()
    app.put(b"v" * 1000, "idle/file.mp4")
    app.wait_for(lambda: _get(app, app.path_and_query("idle/file.mp4"))[0] == 200, what="file")
    worker = worker_pids_of(app.proc.pid)[0]
    before_kb = os_rss_kb(worker)
    socks = []
    try:
        for _ in range(IDLE):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", app.port))
            socks.append(s)
        app.wait_for(lambda: app.metric("oca_open_connections") >= IDLE * 0.95, timeout=30, what="accepted")
        during_kb = os_rss_kb(worker)
        assert _get(app, app.path_and_query("idle/file.mp4")) == (200, b"v" * 1000)  # still serving
        per_conn = (during_kb - before_kb) * 1024 / IDLE
        print(f"RSS {before_kb / 1024:.0f} MB -> {during_kb / 1024:.0f} MB, {per_conn:.0f} bytes per idle connection")
        assert per_conn < 8192  # bounded: a few KB per connection
        # The sweep sheds every one of them (408) once header_timeout_s has passed.
        app.wait_for(lambda: app.metric("oca_open_connections") == 0, timeout=40, what="idle shed")
        assert app.metric("oca_timeouts_total") >= IDLE * 0.95
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_junk_flood_gets_clear_errors_and_no_crash(make_appliance):
    app = make_appliance()
    app.put(b"ok", "flood/file.mp4")
    app.wait_for(lambda: _get(app, app.path_and_query("flood/file.mp4"))[0] == 200, what="file")
    junk = [b"\x00\x01\x02garbage\r\n\r\n", b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 5000 + b"\r\n",
            b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
            b"GET /flood/file.mp4?e=1&e=2 HTTP/1.1\r\nHost: x\r\n\r\n"]
    statuses = set()
    deadline = time.monotonic() + 20
    for i in range(500):
        if time.monotonic() > deadline:
            break
        with socket.create_connection(("127.0.0.1", app.port), timeout=5) as s:
            s.sendall(junk[i % len(junk)])
            reply = s.recv(200)
            statuses.add(reply[9:12])
    assert statuses <= {b"400", b"403", b"414", b"431", b"505"} and b"400" in statuses and b"431" in statuses
    assert _get(app, app.path_and_query("flood/file.mp4")) == (200, b"ok")
    assert app.proc.poll() is None and app.health()["workers"]["alive"] == 1
