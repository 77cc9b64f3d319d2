"""The chaos soak's load: player threads that play and fetch byte ranges, checking every byte.

Strategy. A player acts as players do: a "play" asks playback for the master playlist (playback asks
steering, which signs the URLs), the `loc=` URLs of each rendition, in pathway order, are the ranked
list; a request is a byte range (16 KiB, or 1 MiB one time in five, at a random offset) tried on each
URL in turn, and when all fail the player plays again (a re-steer) and tries the new list once. Every
answer's bytes are compared with the origin's copy (the lab's origin is a local directory); what a
correct answer holds is decided by the pure `expected_bytes`. Outcomes go to one shared `Stats`.
"""
from __future__ import annotations

import http.client
import json
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

KiB, MiB = 1 << 10, 1 << 20


def get(url: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except OSError:
        return 0, b""


def get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    status, body = get(url, headers=headers)
    return json.loads(body) if status == 200 else None


def expected_bytes(status: int, content_range: str | None, data: bytes, first: int, last: int) -> bytes | None:
    """Pure: what a correct 200/206 answer to `bytes=first-last` of `data` holds; None if none can be
    right. A 206's claimed range must be the one asked for, of a file the origin's size; a 200 (the
    whole file instead of the range) is allowed (RFC 9110)."""
    if status == 200:
        return data
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", content_range or "")
    claimed = (int(m[1]), int(m[2]), int(m[3])) if m else None
    return data[first:last + 1] if claimed == (first, last, len(data)) else None


class Stats:
    """Counters shared by the players (under one lock), plus 10 s buckets for the timeline."""

    def __init__(self, t0: float) -> None:
        self.lock = threading.Lock()
        self.t0 = t0
        self.counts: Counter[str] = Counter()  # requests, ok, failover, resteered, failed, wrong, bytes, plays...
        self.reasons: Counter[str] = Counter()  # why an attempt failed: refused, reset, timeout, http-404, ...
        self.buckets: dict[int, Counter[str]] = {}
        self.wrong: list[dict] = []  # the first few wrong answers, for the report

    def add(self, outcome: str, **more: int) -> None:
        with self.lock:
            self.counts[outcome] += 1
            self.counts["requests"] += outcome in ("ok", "failover", "resteered", "failed")
            bucket = self.buckets.setdefault(int((time.monotonic() - self.t0) // 10), Counter())
            bucket[outcome] += 1
            for key, value in more.items():
                self.counts[key] += value

    def add_wrong(self, example: dict) -> None:
        self.add("wrong")
        with self.lock:
            if len(self.wrong) < 10:
                self.wrong.append(example)

    def reason(self, why: str) -> None:
        with self.lock:
            self.reasons[why] += 1


class Player(threading.Thread):
    def __init__(self, n: int, lab_info: dict, origin: Path, stats: Stats, stop: threading.Event, rate: float,
                 seed: int, play_every_s: float = 15.0) -> None:
        super().__init__(name=f"player-{n}", daemon=True)
        # fixed
        self.master_url = f"{lab_info['playback']}/v1/playback/{lab_info['title']}/master.m3u8"
        self.origin, self.stats, self.stop = origin, stats, stop
        self.interval_s = 1.0 / rate
        self.play_every_s = play_every_s
        self.rng = random.Random(seed)
        # per session
        self.ranked: dict[str, list[str]] = {}  # origin-relative path -> signed URLs, best first
        self.next_play = 0.0
        self.conns: dict[str, http.client.HTTPConnection] = {}
        self.files: dict[str, bytes] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            began = time.monotonic()
            if began >= self.next_play:
                self.play()
            if self.ranked:
                self.one_request()
            self.stop.wait(max(0.0, self.interval_s - (time.monotonic() - began)) if self.ranked else 0.5)
        for conn in self.conns.values():
            conn.close()

    def play(self) -> bool:
        """A play: playback's master playlist, whose `loc=` URLs per rendition are in pathway order."""
        self.next_play = time.monotonic() + self.play_every_s
        status, body = get(self.master_url, timeout=5)
        if status != 200:
            self.stats.add("play-failed")
            return False
        ranked: dict[str, list[str]] = {}
        for loc in re.findall(r"[?&]loc=([^\"&\s]+)", body.decode()):
            url = parse_qs(f"loc={loc}")["loc"][0]
            path = urlsplit(url).path.lstrip("/")
            if url.split("/files/", 1)[0] not in [u.split("/files/", 1)[0] for u in ranked.get(path, [])]:
                ranked.setdefault(path, []).append(url)
        self.ranked = {p: urls for p, urls in ranked.items() if (self.origin / p).is_file()}
        self.stats.add("play")
        return True

    def one_request(self) -> None:
        path = self.rng.choice(sorted(self.ranked))
        data = self.files.get(path) or self.files.setdefault(path, (self.origin / path).read_bytes())
        length = MiB if self.rng.random() < 0.2 else 16 * KiB
        first = self.rng.randrange(len(data))
        last = min(len(data), first + length) - 1
        index = self.try_urls(self.ranked[path], data, first, last)
        if index == 0:
            self.stats.add("ok", bytes=last - first + 1)
        elif index is not None:
            self.stats.add("failover", bytes=last - first + 1)
        elif self.play() and (path in self.ranked) and self.try_urls(self.ranked[path], data, first, last) is not None:
            self.stats.add("resteered", bytes=last - first + 1)
        else:
            self.stats.add("failed")

    def try_urls(self, urls: list[str], data: bytes, first: int, last: int) -> int | None:
        for index, url in enumerate(urls):
            verdict = self.attempt(url, data, first, last)
            if verdict == "ok":
                return index
            self.stats.reason(verdict)
        return None

    def attempt(self, url: str, data: bytes, first: int, last: int) -> str:
        """One GET; 'ok', or why not. Any byte that differs from the origin's is counted as wrong."""
        got = self.fetch(url, first, last)
        if isinstance(got, str):
            return got
        resp, body = got
        if resp.status not in (200, 206):
            return f"http-{resp.status}"
        expected = expected_bytes(resp.status, resp.getheader("Content-Range"), data, first, last)
        if expected is None or body != expected[:len(body)]:
            self.stats.add_wrong({"url": url.split("?")[0], "range": [first, last], "status": resp.status,
                                  "content_range": resp.getheader("Content-Range"), "got": len(body)})
            return "wrong-bytes"
        return "ok" if len(body) == len(expected) else "short-body"

    def fetch(self, url: str, first: int, last: int) -> tuple[http.client.HTTPResponse, bytes] | str:
        """The answer and its body (what arrived, if cut mid-body), over a kept-alive connection; or
        why there is none: refused, timeout, reset."""
        parts = urlsplit(url)
        conn = self.conns.get(parts.netloc)
        if conn is None:
            conn = self.conns[parts.netloc] = http.client.HTTPConnection(parts.netloc, timeout=5)
        try:
            conn.request("GET", f"{parts.path}?{parts.query}", headers={"Range": f"bytes={first}-{last}"})
            resp = conn.getresponse()
            try:
                body = resp.read()
            except http.client.IncompleteRead as exc:  # cut mid-body: what arrived is still checked
                body = exc.partial
                conn.close()
            if resp.will_close:
                conn.close()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            self.conns.pop(parts.netloc, None)
            return {ConnectionRefusedError: "refused", TimeoutError: "timeout"}.get(type(exc), "reset")
        return resp, body
