"""Requests that used to get a 500 or worse from a real appliance: a 5000-digit range, a non-ASCII
signature, a respelled token, a GET carrying Upgrade, and a worker out of file descriptors (which
must shed the connection, never fail the disk)."""
from __future__ import annotations

import resource
import socket
import subprocess
import sys
import time

from tests.oca.conftest import raw_exchange
from tests.support import worker_pids_of


def _head_status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def test_huge_range_numbers_are_416_not_500(make_appliance):
    app = make_appliance()
    app.put(b"r" * 1000, "titles/r.mp4")
    target = app.path_and_query("titles/r.mp4").encode()
    app.wait_for(lambda: _head_status(raw_exchange(app.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n"
                                                   b"Connection: close\r\n\r\n")) == 200, what="indexed")
    for rng in (b"bytes=" + b"9" * 5000 + b"-", b"bytes=0-" + b"9" * 5000, b"bytes=0-1,-" + b"9" * 5000):
        reply = raw_exchange(app.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nRange: " + rng +
                             b"\r\nConnection: close\r\n\r\n")
        assert _head_status(reply) == 416 and b"Content-Range: bytes */1000" in reply


def test_odd_token_spellings_are_403_not_500(make_appliance):
    app = make_appliance()
    app.put(b"t" * 100, "titles/t.mp4")
    good = app.path_and_query("titles/t.mp4")
    path, query = good.split("?", 1)
    expiry = query.split("e=", 1)[1].split("&", 1)[0]
    for bad, status in ((query.replace("s=", "s=%C3%A9"), 403), (query.replace("s=", "s=\xe9"), 400),
                        (query.replace(f"e={expiry}", f"e=+{expiry}"), 403),
                        (query.replace(f"e={expiry}", f"e=0{expiry}"), 403)):
        request = f"GET {path}?{bad} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode("latin-1")
        assert _head_status(raw_exchange(app.port, request)) == status, bad  # a raw non-ASCII byte: the parser's 400


def test_upgrade_is_ignored_and_the_connection_goes_on(make_appliance):
    """RFC 9110 §7.8: a server may ignore Upgrade. The GET is answered, and the request that follows
    on the same connection is answered too — no unsolicited 400 after the 206."""
    app = make_appliance()
    app.put(b"0123456789" * 100, "titles/u.mp4")
    target = app.path_and_query("titles/u.mp4").encode()
    app.wait_for(lambda: _head_status(raw_exchange(app.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n"
                                                   b"Connection: close\r\n\r\n")) == 200, what="indexed")
    first = (b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
             b"Range: bytes=0-3\r\n\r\n")
    second = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nRange: bytes=4-7\r\nConnection: close\r\n\r\n"
    reply = raw_exchange(app.port, first + second)
    assert reply.count(b"HTTP/1.1 206 ") == 2 and b" 400 " not in reply, reply[:600]
    assert b"\r\n\r\n0123" in reply and b"\r\n\r\n4567" in reply
    assert b"101 Switching" not in reply


def test_out_of_descriptors_sheds_the_connection_and_keeps_the_disk(make_appliance):
    """A worker at its descriptor limit cannot open a file: that is the worker's trouble, not the
    disk's. The request gets a 503 and its connection is closed; the disk stays up, no file is
    dropped, and once descriptors are free the file is served."""
    app = make_appliance(start=False)
    text = app.config_path.read_text().replace("header_timeout_s = 1.0", "header_timeout_s = 20.0")
    app.config_path.write_text(text)
    app.start()
    for worker in worker_pids_of(app.proc.pid):  # only the worker's limit: never the test process's
        resource.prlimit(worker, resource.RLIMIT_NOFILE, (96, 96))
    for i in range(2):
        app.put(bytes([65 + i]) * 5000, f"titles/fd{i}.mp4")
    first = app.path_and_query("titles/fd0.mp4").encode()
    app.wait_for(lambda: _head_status(raw_exchange(app.port, b"GET " + first + b" HTTP/1.1\r\nHost: x\r\n"
                                                   b"Connection: close\r\n\r\n")) == 200, what="indexed")
    asker = socket.create_connection(("127.0.0.1", app.port), timeout=10)
    hogs = []
    try:
        for _ in range(200):  # more than the worker can accept: it runs out of descriptors
            hogs.append(socket.create_connection(("127.0.0.1", app.port), timeout=10))
        time.sleep(1.0)  # let the worker accept what it can
        target = app.path_and_query("titles/fd1.mp4").encode()  # not open yet: needs a descriptor
        asker.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while True:
            chunk = asker.recv(65536)
            if not chunk:
                break
            reply += chunk
        assert _head_status(reply) == 503 and b"Connection: close" in reply, reply[:300]
    finally:
        asker.close()
        for s in hogs:
            s.close()
    health = app.health()
    assert all(d["ok"] for d in health["disks"]), health["disks"]
    assert app.metric("oca_disk_errors_total") == 0
    target = app.path_and_query("titles/fd1.mp4").encode()
    app.wait_for(lambda: _head_status(raw_exchange(app.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n"
                                                   b"Connection: close\r\n\r\n")) == 200, what="served again")


def test_check_config_warns_about_a_small_descriptor_limit(make_appliance):
    app = make_appliance(start=False)
    out = subprocess.run([sys.executable, "-m", "oca.cli", "check-config", "-c", str(app.config_path)],
                         capture_output=True, text=True, timeout=60,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)))
    assert out.returncode == 0
    assert "http.max_connections" in out.stderr and "1024" in out.stderr
