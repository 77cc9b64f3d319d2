"""`origin serve` as a real subprocess over the local origin: range semantics (RFC 9110 §14, the
appliance's parser, contracts.ranges; every range test with sendfile on and off), fill tokens, the
catalog API, metrics, ffmpeg decoding the whole title from the master playlist over HTTP, and a
graceful SIGTERM."""
from __future__ import annotations

import os
import signal
import socket
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from origin_testkit import SAMPLE_FRAMES, SAMPLE_SECONDS
from origin_testkit import OriginProcess, decoded_audio_seconds, decoded_frames

from contracts.catalog import to_dict
from contracts.keys import load_keyring
from contracts.token import Grant, Scope, encode_query, fill_keys, fill_token, sign_path


@pytest.fixture(scope="module")
def token(keyfile) -> str:
    return fill_token(fill_keys(load_keyring(keyfile), "ams-1"), int(time.time()) + 3600, "ams-1")


@pytest.fixture(scope="module")
def auth(token) -> dict[str, str]:
    return {"Authorization": f"CDN-Token {token}"}


@pytest.fixture(scope="module")
def rendition(world):
    entry = world.ingested("local").entry
    r = next(r for r in entry.video if r.name == "180p")
    return r, (world.location("local").path / r.key).read_bytes()


RANGE_CASES = [
    # (Range header, status, expected slice as (start, end-exclusive) or None for 416/whole); the
    # appliance's answers (nginx's), where the origin's own parser used to differ as noted
    ("bytes=0-99", 206, (0, 100)),
    ("bytes=100-", 206, (100, None)),
    ("bytes=-500", 206, (-500, None)),
    ("bytes=10-10", 206, (10, 11)),
    ("bytes=5-999999999", 206, (5, None)),  # last-pos past the end is clamped
    ("Bytes=0-9", 206, (0, 10)),  # the unit is case-insensitive
    ("BYTES = 0-9", 200, None),  # no whitespace around '=' in the grammar: not a bytes range (was 206)
    ("bytes=999999999-", 416, None),
    ("bytes=-0", 416, None),
    ("bytes=9-5", 416, None),  # a malformed set: refused (was 200, ignored)
    ("bytes=abc", 416, None),  # (was 200)
    ("items=0-5", 200, None),
]


@pytest.mark.parametrize("header,status,window", RANGE_CASES, ids=[c[0] for c in RANGE_CASES])
def test_range_semantics(either, auth, rendition, header, status, window):
    r, data = rendition
    response = requests.get(f"{either.url}/{r.key}", headers={**auth, "Range": header}, timeout=10)
    assert response.status_code == status
    size = len(data)
    if status == 206:
        start, end = window
        expected = data[start:end] if start >= 0 else data[start:]
        assert response.content == expected
        first = start if start >= 0 else size + start
        assert response.headers["Content-Range"] == f"bytes {first}-{first + len(expected) - 1}/{size}"
    elif status == 416:
        assert response.headers["Content-Range"] == f"bytes */{size}"
    else:
        assert response.content == data and "Content-Range" not in response.headers
    assert response.headers["Accept-Ranges"] == "bytes"


def parts(response: requests.Response) -> list[tuple[str, bytes]]:
    """The (Content-Range, body) of each part of a multipart/byteranges body (RFC 9110 §14.6)."""
    boundary = response.headers["Content-Type"].split("boundary=", 1)[1].encode()
    chunks = response.content.split(b"\r\n--" + boundary)
    assert chunks[0] == b"" and chunks[-1] == b"--\r\n"
    out = []
    for chunk in chunks[1:-1]:
        head, _, body = chunk.partition(b"\r\n\r\n")
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
        out.append((fields[b"Content-Range"].decode(), body))
    return out


def test_multipart_byteranges(either, auth, rendition):
    """Several ranges: one 206 multipart/byteranges, parts in the order asked (was: the whole file)."""
    r, data = rendition
    size = len(data)
    got = requests.get(f"{either.url}/{r.key}", headers={**auth, "Range": "bytes=500-599,0-9,-5"}, timeout=10)
    assert got.status_code == 206 and got.headers["Content-Type"].startswith("multipart/byteranges; boundary=")
    assert int(got.headers["Content-Length"]) == len(got.content)
    assert parts(got) == [(f"bytes 500-599/{size}", data[500:600]), (f"bytes 0-9/{size}", data[:10]),
                          (f"bytes {size - 5}-{size - 1}/{size}", data[-5:])]
    head = requests.head(f"{either.url}/{r.key}", headers={**auth, "Range": "bytes=500-599,0-9,-5"}, timeout=10)
    assert head.status_code == 206 and head.headers["Content-Length"] == got.headers["Content-Length"]
    overlap = requests.get(f"{either.url}/{r.key}", headers={**auth, "Range": f"bytes=0-{size - 1},0-{size - 1}"},
                           timeout=10)
    assert overlap.status_code == 200 and overlap.content == data  # more bytes than the file: the whole of it


def test_segment_ranges_from_the_entry(either, auth, rendition):
    r, data = rendition
    for seg in r.segments:
        end = seg.offset + seg.length - 1
        got = requests.get(f"{either.url}/{r.key}", headers={**auth, "Range": f"bytes={seg.offset}-{end}"}, timeout=10)
        assert got.status_code == 206 and got.content == data[seg.offset:end + 1]


def test_head_and_if_range(either, auth, rendition):
    r, data = rendition
    url = f"{either.url}/{r.key}"
    head = requests.head(url, headers=auth, timeout=10)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(data) and not head.content
    etag, modified = head.headers["ETag"], head.headers["Last-Modified"]
    ranged = requests.head(url, headers={**auth, "Range": "bytes=0-9"}, timeout=10)
    assert (ranged.status_code, ranged.headers["Content-Length"], ranged.content) == (206, "10", b"")
    for if_range, status in [(etag, 206), ('"old"', 200), ("W/" + etag, 200), (modified, 206),
                             ("Thu, 01 Jan 1970 00:00:00 GMT", 200)]:
        got = requests.get(url, headers={**auth, "Range": "bytes=0-9", "If-Range": if_range}, timeout=10)
        assert got.status_code == status, if_range
        assert got.content == (data[:10] if status == 206 else data)
    assert requests.get(url, headers={**auth, "Range": "bytes=9-5", "If-Range": '"old"'},
                        timeout=10).status_code == 200  # a stale If-Range sends the whole file before any 416


def test_token_in_query_string(served, token, rendition):
    r, data = rendition
    assert requests.get(f"{served.url}/{r.key}?{token}", timeout=10).content == data


def _forged(keyfile) -> str:
    keys = load_keyring(keyfile)
    good = fill_token(fill_keys(keys, "ams-1"), int(time.time()) + 3600, "ams-1")
    return good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")


REFUSALS = {
    "missing": lambda keyfile: None,
    "forged": _forged,
    "expired": lambda keyfile: fill_token(fill_keys(load_keyring(keyfile), "ams-1"), int(time.time()) - 10, "ams-1"),
    "not-derived": lambda keyfile: fill_token(load_keyring(keyfile), int(time.time()) + 60, "ams-1"),
    "play-scope": lambda keyfile: sign_path("*", load_keyring(keyfile), int(time.time()) + 60).split("?", 1)[1],
    "unknown-key": lambda keyfile: encode_query(
        Grant("*", int(time.time()) + 60, "nokey", scope=Scope.FILL), b"x" * 32),
}


@pytest.mark.parametrize("case", list(REFUSALS))
@pytest.mark.parametrize("where", ["header", "query"])
def test_bad_tokens_are_refused(served, keyfile, rendition, case, where):
    r, _ = rendition
    token = REFUSALS[case](keyfile)
    url, headers = f"{served.url}/{r.key}", {}
    if token is not None:
        if where == "header":
            headers["Authorization"] = f"CDN-Token {token}"
        else:
            url += f"?{token}"
    response = requests.get(url, headers=headers, timeout=10)
    assert response.status_code == 403
    assert response.headers["X-Deny-Reason"].startswith(("token-", "bad-", "unknown-", "wrong-"))
    assert requests.get(f"{served.url}/v1/titles", headers=headers, timeout=10).status_code == 403


def test_missing_and_invalid_keys(served, auth):
    assert requests.get(f"{served.url}/files/nope/v0000000000000000/x.mp4", headers=auth, timeout=10).status_code == 404
    assert requests.get(f"{served.url}/files/../etc/passwd", headers=auth, timeout=10).status_code == 404
    assert requests.get(f"{served.url}/.tmp/x", headers=auth, timeout=10).status_code == 404


def test_catalog_api(served, auth, world):
    listing = requests.get(f"{served.url}/v1/titles", headers=auth, timeout=10)
    assert listing.status_code == 200
    ids = [t["id"] for t in listing.json()["titles"]]
    assert "sample" in ids
    found = requests.get(f"{served.url}/v1/titles", params={"q": "sample ti"}, headers=auth, timeout=10).json()
    assert found["titles"][0]["id"] == "sample"
    by_genre = requests.get(f"{served.url}/v1/titles", params={"genre": "ANIMATION"}, headers=auth, timeout=10)
    assert "sample" in [t["id"] for t in by_genre.json()["titles"]]
    one = requests.get(f"{served.url}/v1/titles/sample", headers=auth, timeout=10).json()
    assert one["id"] == "sample" and one["renditions"][0]["segments"]
    assert one == to_dict(world.ingested("local").entry)
    assert requests.get(f"{served.url}/v1/titles/none", headers=auth, timeout=10).status_code == 404


def test_health_and_metrics(served):
    assert requests.get(f"{served.url}/healthz", timeout=10).text == "ok\n"
    scraped = requests.get(f"{served.url}/metrics", timeout=10)
    assert scraped.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = scraped.text
    assert "origin_bytes_sent_total" in text and 'origin_responses_total{route="file"' in text
    families = {f.name: f for f in text_string_to_metric_families(text)}  # the whole exposition parses
    assert families["origin_responses"].type == "counter" and families["origin_requests_in_flight"].type == "gauge"
    sent = next(s for s in families["origin_bytes_sent"].samples if s.name == "origin_bytes_sent_total")
    assert sent.value > 0
    assert {"origin_token_refusals", "origin_task_failures", "origin_connections"} <= set(families)


def test_ffmpeg_decodes_the_whole_title_from_the_master_playlist(served, token, world):
    entry = world.ingested("local").entry
    url = f"{served.url}/{entry.master}"
    headers = f"Authorization: CDN-Token {token}\r\n"
    assert decoded_frames(url, "0:v:0", headers) == SAMPLE_FRAMES
    assert decoded_audio_seconds(url, headers) == pytest.approx(SAMPLE_SECONDS, abs=0.1)


def test_sigterm_drains_and_exits(world, keyfile, tmp_path):
    conf = tmp_path / "origin.toml"
    conf.write_text(f'[origin]\nlocation = "{world.location("local").path}"\n[serve]\nport = 0\n'
                    f'key_file = "{keyfile}"\n')
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(20)
    origin = OriginProcess(conf, env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    assert requests.get(f"{origin.url}/healthz", timeout=10).status_code == 200
    assert notify.recv(64) == b"READY=1"
    origin.proc.send_signal(signal.SIGTERM)
    assert origin.proc.wait(timeout=20) == 0
    assert [e["event"] for e in origin.events()] == ["listening", "draining", "stopped"]
    assert notify.recv(64) == b"STOPPING=1"
    notify.close()
