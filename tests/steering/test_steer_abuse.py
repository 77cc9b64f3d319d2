"""`steering serve` (a real process, real sockets) sheds abuse as the appliance does (ARCHITECTURE §5,
contracts.webguard): floods of idle, half-headed and keep-alive connections are closed within the
header/idle timeout while heartbeats and /v1/steer keep working; one client beyond its connection cap
is refused at once while the others (and the appliances) are served, also under a descriptor limit
that used to let 300 idle sockets take every appliance `down`; big anonymous bodies are refused before
they are read; bad JSON is a 4xx JSON error, never a 500. The descriptor count and RSS of the server
under each flood are printed (pytest -s) for the record."""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from contracts.keys import load_keyring
from contracts.token import Keyring
from tests.steering.steer_helpers import (AUTH, SteeringProcess, heartbeat, log_events, post_heartbeat, wait_for_port,
                                          wait_until, write_setup)
from tests.support.flood import (FULL_HEAD, HALF_HEAD, Flood, connect, exchange, proc_stats, read_reply,
                                 send_until_refused, shed_flood)

FLOOD = 500
BIG = 66 * 1000 * 1000  # the attacker's 66 MB
GUARD = {"header_timeout_s": 2.0, "idle_timeout_s": 3.0, "body_timeout_s": 2.0, "max_connections": 2000,
         "max_connections_per_client": 1500, "max_heartbeat_bytes": 1 << 20}
FORGED = "a=ams-1,k=k1,s=" + "A" * 43  # well-formed, signed by nobody


@pytest.fixture(scope="module")
def steering(tmp_path_factory):
    process = SteeringProcess(write_setup(tmp_path_factory.mktemp("abuse"), steering=GUARD))
    yield process
    assert process.stop() == 0


def steers(steering) -> bool:
    r = requests.get(steering.url + "/v1/steer", params={"file": "t/a.mp4", "client": "192.0.2.7"}, headers=AUTH, timeout=5)
    return r.status_code == 200 and "ams-1" in r.json()["locations"][0]


def went_down(steering) -> int:
    return sum(e["appliance"] == "ams-1" and e["to"] == "down" for e in log_events(steering.log, "appliance-status"))


class Appliance:
    """ams-1 reporting every 0.1 s (the replica expects one every 0.3 s and marks it down after three
    missed) while the `with` lasts, every answer kept; entered once steering steers to it."""

    def __init__(self, steering) -> None:
        self.steering = steering
        self.answers: list[object] = []
        self.downs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        for _ in range(3000):  # bounded: 5 minutes at most
            try:
                hb = heartbeat("ams-1", "ams", added=["t/a.mp4"])
                self.answers.append(post_heartbeat(self.steering.url, hb, self.steering.keys).status_code)
            except requests.RequestException as exc:
                self.answers.append(exc)
            if self._stop.wait(0.1):
                return

    def __enter__(self) -> "Appliance":
        self._thread.start()
        wait_until(lambda: steers(self.steering), timeout_s=10)
        self.answers.clear()
        self.downs = went_down(self.steering)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def heard(self) -> None:
        """Every report since entering was acked, the appliance never went down, steering steers to it."""
        wait_until(lambda: len(self.answers) >= 3)
        assert self.answers and set(self.answers) == {200}, [a for a in self.answers if a != 200][:3]
        assert went_down(self.steering) == self.downs
        assert steers(self.steering)


# ---- floods ---------------------------------------------------------------------------------------

FLOODS = [("idle", b"", b""), ("half-head", HALF_HEAD, b"HTTP/1.1 408 "), ("keep-alive", FULL_HEAD, b"HTTP/1.1 200 ")]


@pytest.mark.parametrize("kind,payload,reply", FLOODS, ids=[f[0] for f in FLOODS])
def test_a_flood_is_shed_within_its_timeout_while_heartbeats_and_steer_work(steering, kind, payload, reply):
    def steered() -> None:
        assert steers(steering)

    with Appliance(steering) as appliance:
        shed = shed_flood(steering.proc.pid, steering.port, FLOOD, payload, reply, steered)
        appliance.heard()
    print(f"\nsteering, {FLOOD} {kind} connections: {shed}")


# ---- connection caps ------------------------------------------------------------------------------

NOFILE = 300  # the attacker's setting: a low descriptor limit


@dataclass
class Limited:
    """`steering serve` started under a descriptor limit (SteeringProcess cannot set one)."""

    proc: subprocess.Popen
    log: Path
    port: int
    url: str
    keys: Keyring


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    """A replica under a 300-descriptor limit (its cap clamped to 236), 100 connections per client,
    long timeouts (a flood stays until the test ends it)."""
    config = write_setup(tmp_path_factory.mktemp("capped"), steering={
        "header_timeout_s": 60.0, "idle_timeout_s": 60.0, "max_connections_per_client": 100})
    log = config.parent / "steering.log"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))

    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "steering.cli", "serve", "-c", str(config)], stdout=out,
                                stderr=subprocess.STDOUT, preexec_fn=limit)
    port = wait_for_port(proc, log)
    yield Limited(proc, log, port, f"http://127.0.0.1:{port}", load_keyring(config.parent / "keys.toml"))
    proc.terminate()
    assert proc.wait(10) == 0


def test_one_client_beyond_its_cap_is_refused_and_the_appliances_are_still_heard(capped):
    steering = capped
    clamped = log_events(steering.log, "connection-cap-clamped")
    assert clamped and clamped[0]["cap"] == NOFILE - 64
    pid = steering.proc.pid
    with Appliance(steering) as appliance:
        before = proc_stats(pid)
        attacker = Flood(steering.port, 300, source="127.0.0.2")  # the attack of the report, from one address
        try:
            refused = attacker.closed_within(1.0)
            assert refused == list(range(100, 300))  # its first 100 are held; the rest answered at once, closed
            assert all(attacker.replies[i].startswith(b"HTTP/1.1 503 ") for i in refused)
            during = proc_stats(pid)
            assert during.fds < NOFILE - 50
            time.sleep(1.0)  # a few more reports while the attacker holds its connections
            held = attacker.socks[0]  # and the attacker's accepted connections work too
            held.sendall(FULL_HEAD)
            assert read_reply(held).startswith(b"HTTP/1.1 200 ")
        finally:
            attacker.close()
        appliance.heard()
    print(f"\nsteering under a {NOFILE}-descriptor limit, 300 idle connections from one client (100 held, "
          f"200 refused): before {before}; during {during}")


def test_beyond_the_whole_cap_new_connections_are_refused_and_open_ones_keep_working(capped):
    steering = capped
    cap = NOFILE - 64
    crowd = [Flood(steering.port, 100, FULL_HEAD, source=f"127.0.0.{i}") for i in (3, 4)]  # 200 open, keep-alive
    try:
        extra = Flood(steering.port, 100, source="127.0.0.5")
        try:
            refused = extra.closed_within(1.0)
            assert refused == list(range(cap - 200, 100))  # only the room left under the cap was taken
            assert all(extra.replies[i].startswith(b"HTTP/1.1 503 ") for i in refused)
            reply = exchange(steering.port, FULL_HEAD)  # a newcomer meets the cap
            assert reply == b"" or reply.startswith(b"HTTP/1.1 503 ")
            for s in crowd[0].socks[:10]:  # the open ones still work
                s.sendall(FULL_HEAD)
                assert read_reply(s).startswith(b"HTTP/1.1 200 ")
        finally:
            extra.close()
    finally:
        for flood in crowd:
            flood.close()
    wait_until(lambda: exchange(steering.port, FULL_HEAD).startswith(b"HTTP/1.1 200 "), timeout_s=5)
    with Appliance(steering) as appliance:
        appliance.heard()


# ---- bodies ---------------------------------------------------------------------------------------

def head(path: str, length: int | None, extra: str = "", auth: bool = True) -> bytes:
    """A POST head; to /v1/steer with the operator's token unless `auth` is False."""
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    if auth and path == "/v1/steer":
        extra += f"Authorization: {AUTH['Authorization']}\r\n"
    return f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{framing}\r\n{extra}\r\n".encode()


def error_of(reply: bytes) -> tuple[int, dict]:
    status = int(reply.split(b" ", 2)[1])
    return status, json.loads(reply.partition(b"\r\n\r\n")[2])


ADVERTISED = [("steer", "/v1/steer", "", 413, "body-too-large"),
              ("anonymous steer", "/v1/steer", "anonymous", 401, "unauthorized"),
              ("unsigned heartbeat", "/v1/heartbeat", "", 401, "heartbeat-unauthorized"),
              ("garbled signature", "/v1/heartbeat", "X-CDN-Heartbeat-Signature: k=k1\r\n", 401,
               "heartbeat-unauthorized"),
              ("forged heartbeat", "/v1/heartbeat", f"X-CDN-Heartbeat-Signature: {FORGED}\r\n", 413,
               "body-too-large")]


@pytest.mark.parametrize("path,extra,status,error", [a[1:] for a in ADVERTISED], ids=[a[0] for a in ADVERTISED])
def test_a_big_advertised_body_is_refused_unread(steering, path, extra, status, error):
    with connect(steering.port) as s:
        s.sendall(head(path, BIG, "" if extra == "anonymous" else extra, auth=extra != "anonymous"))
        assert requests.get(steering.url + "/healthz", timeout=5).status_code == 200  # the loop is free
        reply = read_reply(s)
        assert error_of(reply) == (status, {"error": error, "detail": error_of(reply)[1]["detail"]})
        assert b"connection: close" in reply.partition(b"\r\n\r\n")[0].lower().split(b"\r\n")
        assert send_until_refused(s, BIG, b"x" * 65536) < BIG  # the server hung up: the body was never read
    assert requests.get(steering.url + "/healthz", timeout=5).status_code == 200


CHUNKED = [("steer", "/v1/steer", ""),
           ("forged heartbeat", "/v1/heartbeat", f"X-CDN-Heartbeat-Signature: {FORGED}\r\n")]


@pytest.mark.parametrize("path,extra", [c[1:] for c in CHUNKED], ids=[c[0] for c in CHUNKED])
def test_a_big_chunked_body_is_read_only_to_the_limit(steering, path, extra):
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    with connect(steering.port) as s:
        s.sendall(head(path, None, extra))
        sent: list[int] = []
        sender = threading.Thread(target=lambda: sent.append(send_until_refused(s, BIG, chunk)))
        sender.start()
        assert requests.get(steering.url + "/healthz", timeout=5).status_code == 200
        sender.join(30)
        assert sent and sent[0] < BIG // 4  # refused a little past the 1 MiB limit, not after 66 MB
        reply = read_reply(s)  # sent before the server hung up: still readable after the reset
    assert error_of(reply)[0] == 413
    assert requests.get(steering.url + "/healthz", timeout=5).status_code == 200


def test_a_body_that_stalls_is_timed_out_and_compressed_bodies_are_refused(steering):
    with connect(steering.port) as s:
        s.sendall(head("/v1/steer", 100) + b'{"files": [')
        reply = read_reply(s, timeout_s=10)
    assert error_of(reply)[0] == 408 and error_of(reply)[1]["error"] == "body-timeout"
    gzipped = exchange(steering.port, head("/v1/steer", 4, "Content-Encoding: gzip\r\n") + b"abcd")
    assert error_of(gzipped)[:1] == (415,)


# ---- bad JSON: 4xx, never 500 ------------------------------------------------------------------

BAD_STEER = [
    ("infinite ttl", b'{"files": ["t/a.mp4"], "ttl_s": Infinity}', "json-non-finite"),
    ("nan ttl", b'{"files": ["t/a.mp4"], "ttl_s": NaN}', "json-non-finite"),
    ("1e999 ttl", b'{"files": ["t/a.mp4"], "ttl_s": 1e999}', "json-non-finite"),
    ("huge ttl", b'{"files": ["t/a.mp4"], "ttl_s": 1e300}', "bad-request"),
    ("string ttl", b'{"files": ["t/a.mp4"], "ttl_s": "soon"}', "bad-request"),
    ("list ttl", b'{"files": ["t/a.mp4"], "ttl_s": [5]}', "bad-request"),
    ("deep arrays", b"[" * 100_000 + b"]" * 100_000, "json-too-deep"),
    ("deep objects", b'{"a":' * 40 + b"1" + b"}" * 40, "json-too-deep"),
    ("deep files", b'{"files": ' + b"[" * 200 + b"]" * 200 + b"}", "json-too-deep"),
    ("null", b"null", "json-wrong-type"),
    ("array", b'["t/a.mp4"]', "json-wrong-type"),
    ("number", b"5", "json-wrong-type"),
    ("files a number", b'{"files": 5}', "bad-request"),
    ("files null", b'{"files": null}', "bad-request"),
    ("files of numbers", b'{"files": [1, 2]}', "bad-request"),
    ("client a number", b'{"files": ["t/a.mp4"], "client": 5}', "bad-request"),
    ("client garbage", b'{"files": ["t/a.mp4"], "client": "not-an-ip"}', None),
    ("5000 digits", b'{"files": ["t/a.mp4"], "ttl_s": ' + b"9" * 5000 + b"}", "json-invalid"),
    ("not utf-8", b'{"files": ["\xff"]}', "json-invalid"),
    ("truncated", b'{"files": ["t/a.mp4"', "json-invalid"),
    ("empty", b"", "json-invalid"),
]


@pytest.mark.parametrize("body,error", [b[1:] for b in BAD_STEER], ids=[b[0] for b in BAD_STEER])
def test_bad_steer_bodies_are_4xx_json(steering, body, error):
    r = requests.post(steering.url + "/v1/steer", data=body, headers={"Content-Type": "application/json", **AUTH},
                      timeout=10)
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["Content-Type"].startswith("application/json") and "detail" in r.json()
    if error is not None:
        assert r.json()["error"] == error


@pytest.mark.parametrize("ttl", ["Infinity", "NaN", "1e999", "-1", "9" * 5000, ""])
def test_bad_steer_queries_are_4xx_json(steering, ttl):
    r = requests.get(steering.url + "/v1/steer", params={"file": "t/a.mp4", "ttl_s": ttl}, headers=AUTH, timeout=5)
    assert 400 <= r.status_code < 500 and r.json()["error"] == "bad-request", r.text
