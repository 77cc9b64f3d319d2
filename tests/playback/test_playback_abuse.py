"""`playback serve` (a real process, real sockets) sheds abuse as the appliance does (ARCHITECTURE §5,
contracts.webguard): floods of idle, half-headed and keep-alive connections are closed within the
header/idle timeout while the catalog and viewing events keep working; big event bodies are refused
before they are read; bad event JSON (`null`, `{"events": 5}`, deep, Infinity, ...) is a 4xx JSON error,
never a 500. Only the catalog and events are used: the steering URL points nowhere. The descriptor
count and RSS of the server under each flood are printed (pytest -s) for the record."""
from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from playback_testkit import PlaybackProcess, origin_with_title, playback_toml
from tests.support.flood import FULL_HEAD, HALF_HEAD, connect, read_reply, send_until_refused, shed_flood

FLOOD = 500
BIG = 66 * 1000 * 1000
NOWHERE = "http://127.0.0.1:9"
GUARD = """header_timeout_s = 2.0
idle_timeout_s = 3.0
body_timeout_s = 2.0
max_connections = 2000
max_connections_per_client = 1500
"""


@pytest.fixture(scope="module")
def playback(tmp_path_factory):
    folder = tmp_path_factory.mktemp("abuse")
    config = folder / "playback.toml"
    config.write_text(playback_toml(origin_with_title(folder / "origin", "t1"), [NOWHERE], GUARD))
    process = PlaybackProcess(config)
    yield process
    assert process.stop() == 0


def event(**change) -> dict:
    return {"userId": "u1", "videoId": "t1", "event": "play", "timestamp": time.time(), "position": 0, **change}


def serves(playback) -> None:
    """The catalog answers and a viewing event is accepted."""
    assert requests.get(playback.url + "/v1/titles/t1", timeout=5).status_code == 200
    r = requests.post(playback.url + "/v1/events", json={"events": [event()]}, timeout=5)
    assert (r.status_code, r.json()) == (202, {"accepted": 1})


FLOODS = [("idle", b"", b""), ("half-head", HALF_HEAD, b"HTTP/1.1 408 "), ("keep-alive", FULL_HEAD, b"HTTP/1.1 200 ")]


@pytest.mark.parametrize("kind,payload,reply", FLOODS, ids=[f[0] for f in FLOODS])
def test_a_flood_is_shed_within_its_timeout_while_the_catalog_and_events_work(playback, kind, payload, reply):
    serves(playback)
    shed = shed_flood(playback.proc.pid, playback.port, FLOOD, payload, reply, lambda: serves(playback))
    serves(playback)
    print(f"\nplayback, {FLOOD} {kind} connections: {shed}")


# ---- bodies ---------------------------------------------------------------------------------------

def head(length: int | None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return f"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{framing}\r\n\r\n".encode()


def error_of(reply: bytes) -> tuple[int, str]:
    return int(reply.split(b" ", 2)[1]), json.loads(reply.partition(b"\r\n\r\n")[2])["error"]


def test_a_big_advertised_event_body_is_refused_unread(playback):
    with connect(playback.port) as s:
        s.sendall(head(BIG))
        assert requests.get(playback.url + "/healthz", timeout=5).status_code == 200  # the loop is free
        reply = read_reply(s)
        assert error_of(reply) == (413, "body-too-large")
        assert b"connection: close" in reply.partition(b"\r\n\r\n")[0].lower().split(b"\r\n")
        assert send_until_refused(s, BIG, b"x" * 65536) < BIG  # the server hung up: the body was never read
    serves(playback)


def test_a_big_chunked_event_body_is_read_only_to_the_limit(playback):
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    with connect(playback.port) as s:
        s.sendall(head(None))
        sent: list[int] = []
        sender = threading.Thread(target=lambda: sent.append(send_until_refused(s, BIG, chunk)))
        sender.start()
        assert requests.get(playback.url + "/healthz", timeout=5).status_code == 200
        sender.join(30)
        assert sent and sent[0] < BIG // 4  # refused just past the 64 KiB limit, not after 66 MB
        assert error_of(read_reply(s)) == (413, "body-too-large")
    serves(playback)


BAD_EVENTS = [
    ("null", b"null", "json-wrong-type"),
    ("a number", b"5", "json-wrong-type"),
    ("a string", b'"play"', "json-wrong-type"),
    ("events a number", b'{"events": 5}', "bad-event"),
    ("events null", b'{"events": null}', "bad-event"),
    ("events a string", b'{"events": "play"}', "bad-event"),
    ("events empty", b'{"events": []}', "bad-event"),
    ("a list of numbers", b"[5, 6]", "bad-event"),
    ("a list of nulls", b"[null]", "bad-event"),
    ("events of nulls", b'{"events": [null]}', "bad-event"),
    ("an empty event", b"{}", "bad-event"),
    ("videoId a number", json.dumps(event(videoId=5)).encode(), "bad-event"),
    ("videoId an object", json.dumps(event(videoId={"a": 1})).encode(), "bad-event"),
    ("position Infinity", json.dumps(event()).replace('"position": 0', '"position": Infinity').encode(),
     "json-non-finite"),
    ("timestamp NaN", json.dumps(event()).replace('"timestamp": ', '"timestamp": NaN, "x": ').encode(),
     "json-non-finite"),
    ("position 1e999", json.dumps(event()).replace('"position": 0', '"position": 1e999').encode(), "json-non-finite"),
    ("deep", b'{"events": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "json-too-deep"),
    ("deep, unclosed", b"[" * 60_000, "json-too-deep"),
    ("deep and big", b'{"events": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "body-too-large"),
    ("not utf-8", b'{"events": ["\xff"]}', "json-invalid"),
    ("truncated", b'{"events": [', "json-invalid"),
    ("empty", b"", "json-invalid"),
]


@pytest.mark.parametrize("body,error", [b[1:] for b in BAD_EVENTS], ids=[b[0] for b in BAD_EVENTS])
def test_bad_event_bodies_are_4xx_json(playback, body, error):
    r = requests.post(playback.url + "/v1/events", data=body, headers={"Content-Type": "application/json"},
                      timeout=10)
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["Content-Type"].startswith("application/json") and "detail" in r.json()
    assert r.json()["error"] == error
