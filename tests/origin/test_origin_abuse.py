"""`origin serve` (a real process, real sockets) sheds abuse as the appliance does (ARCHITECTURE §5,
contracts.webguard): floods of idle, half-headed and keep-alive connections are closed within the
header/idle timeout while fills (token-authorized ranged GETs) keep working; one client beyond its
connection cap is refused at once while the others are served; a request body is never read (the
origin has no route that wants one); a client that stops reading its body is dropped after
send_timeout_s, whether the body goes by sendfile or is copied. The descriptor count and RSS of the
server under each flood are printed (pytest -s) for the record."""
from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import requests
from origin_testkit import OriginProcess

from contracts.keys import load_keyring, write_new_keyfile
from contracts.token import fill_keys, fill_token
from tests.steering.steer_helpers import wait_until
from tests.support.flood import (FULL_HEAD, HALF_HEAD, Flood, connect, exchange, read_reply, send_until_refused,
                                 shed_flood)

FLOOD = 500
BIG = 66 * 1000 * 1000
DATA = bytes(range(256)) * 64
CONFIG = """
[origin]
location = "origin"
[serve]
listen = "127.0.0.1"
port = 0
key_file = "keys.toml"
header_timeout_s = 2.0
idle_timeout_s = 3.0
max_connections = 2000
max_connections_per_client = {per_client}
"""


def start(folder: Path, per_client: int, extra: str = "") -> OriginProcess:
    (folder / "origin" / "t1").mkdir(parents=True)
    (folder / "origin" / "t1" / "v.mp4").write_bytes(DATA)
    write_new_keyfile(folder / "keys.toml")
    (folder / "origin.toml").write_text(CONFIG.format(per_client=per_client) + extra)
    return OriginProcess(folder / "origin.toml")


@pytest.fixture(scope="module")
def origin(tmp_path_factory):
    process = start(tmp_path_factory.mktemp("abuse"), per_client=1500)
    yield process
    assert process.stop() == 0


def port_of(origin: OriginProcess) -> int:
    return int(origin.url.rsplit(":", 1)[1])


def token_of(origin: OriginProcess) -> str:
    keys = fill_keys(load_keyring(Path(origin.log).parent / "keys.toml"), "ams-1")
    return fill_token(keys, int(time.time()) + 600, "ams-1")


def fills(origin: OriginProcess) -> None:
    """A fill's ranged GET (with a fill token) is answered."""
    r = requests.get(origin.url + "/t1/v.mp4", headers={"Authorization": f"CDN-Token {token_of(origin)}",
                                                        "Range": "bytes=10-19"}, timeout=5)
    assert (r.status_code, r.content) == (206, DATA[10:20])


FLOODS = [("idle", b"", b""), ("half-head", HALF_HEAD, b"HTTP/1.1 408 "), ("keep-alive", FULL_HEAD, b"HTTP/1.1 200 ")]


@pytest.mark.parametrize("kind,payload,reply", FLOODS, ids=[f[0] for f in FLOODS])
def test_a_flood_is_shed_within_its_timeout_while_fills_work(origin, kind, payload, reply):
    shed = shed_flood(origin.proc.pid, port_of(origin), FLOOD, payload, reply, lambda: fills(origin))
    fills(origin)
    print(f"\norigin, {FLOOD} {kind} connections: {shed}")


def test_one_client_beyond_its_cap_is_refused_while_the_others_fill(tmp_path):
    origin = start(tmp_path, per_client=50)
    try:
        attacker = Flood(port_of(origin), 80, source="127.0.0.2")
        try:
            refused = attacker.closed_within(1.0)
            assert refused == list(range(50, 80))  # its first 50 are held, the rest answered 503 and closed
            assert all(attacker.replies[i].startswith(b"HTTP/1.1 503 ") for i in refused)
            for _ in range(3):
                fills(origin)  # everyone else is served
            held = attacker.socks[0]  # and its accepted connections work
            held.sendall(FULL_HEAD)
            assert read_reply(held).startswith(b"HTTP/1.1 200 ")
        finally:
            attacker.close()
        wait_until(lambda: exchange(port_of(origin), FULL_HEAD, source="127.0.0.2").startswith(b"HTTP/1.1 200 "))
    finally:
        assert origin.stop() == 0


@pytest.mark.parametrize("request_line", ["GET /healthz", "GET /t1/v.mp4", "POST /t1/v.mp4"])
def test_a_request_body_is_never_read(origin, request_line):
    with connect(port_of(origin)) as s:
        s.sendall(f"{request_line} HTTP/1.1\r\nHost: t\r\nContent-Length: {BIG}\r\n\r\n".encode())
        assert requests.get(origin.url + "/healthz", timeout=5).status_code == 200  # the loop is free
        reply = read_reply(s)
        assert int(reply.split(b" ", 2)[1]) in (200, 403, 405)
        assert b"connection: close" in reply.partition(b"\r\n\r\n")[0].lower().split(b"\r\n")
        assert send_until_refused(s, BIG, b"x" * 65536) < BIG  # the server hung up: the body was never read
    fills(origin)


def metric(origin: OriginProcess, sample: str) -> float:
    text = requests.get(origin.url + "/metrics", timeout=5).text
    return next((float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(sample + " ")), 0.0)


@pytest.mark.parametrize("sendfile", [True, False], ids=["sendfile", "copy"])
def test_a_client_that_stops_reading_is_dropped(tmp_path, sendfile):
    """The guard times a copied body by its paused writes; a sendfile step is timed by origin.filebody.
    Either way the connection is aborted after send_timeout_s, counted once as a send timeout, and the
    origin goes on serving."""
    origin = start(tmp_path, per_client=10, extra=f"send_timeout_s = 1.0\nsendfile = {str(sendfile).lower()}\n")
    try:
        size = 256 << 20
        with open(tmp_path / "origin" / "t1" / "big.mp4", "wb") as fh:
            fh.truncate(size)  # sparse: far more than the socket buffers hold, no disk used
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: no autotuning
        s.settimeout(10)
        s.connect(("127.0.0.1", port_of(origin)))
        s.sendall(f"GET /t1/big.mp4 HTTP/1.1\r\nHost: t\r\nAuthorization: CDN-Token {token_of(origin)}\r\n\r\n"
                  .encode())
        wait_until(lambda: metric(origin, "origin_send_timeouts_total") == 1, timeout_s=10)
        assert metric(origin, "origin_requests_in_flight") == 0
        received = 0
        try:
            while chunk := s.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass  # aborted: the bytes still buffered may be lost
        s.close()
        assert received < size  # never the whole body: the client was dropped
        if sendfile:
            assert metric(origin, 'origin_bodies_aborted_total{reason="stalled"}') == 1
        fills(origin)
    finally:
        assert origin.stop() == 0
