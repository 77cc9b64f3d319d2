"""Helpers for the origin tests: a fault-injecting HTTP proxy in front of the S3 server (real HTTP,
boto3 unpatched), a backend that "loses power" mid-upload, ffprobe and ffmpeg wrappers."""
from __future__ import annotations

import http.client
import json
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "te", "upgrade"}
S3_ERRORS = {503: "SlowDown", 500: "InternalError", 400: "InvalidArgument"}

Rule = Callable[[str, str, int], int | None]  # (method, path?query, request number) -> status to inject


class OriginProcess:
    """`origin serve -c CONFIG` as a real process; its log (stdout: one JSON event a line) in
    origin.log beside the config; the URL read from the `listening` event."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        import sys
        import time

        self.log = config.parent / "origin.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "origin.cli", "serve", "-c", str(config)],
                                         stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while not (listening := self.events("listening")):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"origin serve did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        self.url = listening[0]["url"]

    def events(self, event: str | None = None) -> list[dict]:
        """Every line must be one JSON event (json.loads fails the test on a plain line)."""
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]
        return [e for e in lines if event is None or e.get("event") == event]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FaultProxy:
    """Forwards every request to `upstream` unless `rule` says to answer with an S3 error instead."""

    def __init__(self, upstream: str, rule: Rule) -> None:
        self.upstream = urlsplit(upstream)
        self.rule = rule
        self.count = 0
        self.injected: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline().strip():
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                with proxy.lock:
                    proxy.count += 1
                    status = proxy.rule(self.command, self.path, proxy.count)
                    if status is not None:
                        proxy.injected.append((self.command, self.path, status))
                if status is not None:
                    code = S3_ERRORS.get(status, "InternalError")
                    payload = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in _HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data) if self.command != "HEAD"
                                                        else response.getheader("Content-Length", "0")))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class PowerCut(Exception):
    """What a crash looks like to the ingest: the upload stops dead."""


class CrashingBackend:
    """Uploads the first `files_ok` files of a batch, then raises PowerCut."""

    def __init__(self, inner, files_ok: int) -> None:
        self.inner, self.files_ok = inner, files_ok

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def put_files(self, items, progress=None) -> None:
        self.inner.put_files(list(items)[:self.files_ok], progress)
        raise PowerCut("power cut during upload")


def ffprobe_streams(path_or_url: str, *extra: str) -> list[dict]:
    out = subprocess.run(["ffprobe", "-v", "error", *extra, "-print_format", "json", "-show_streams", path_or_url],
                         capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)["streams"]


def decoded_frames(url: str, stream: str, headers: str | None = None) -> int:
    """Frames ffmpeg decodes from `url` for one mapped stream ("0:v:0"), parsed from its `frame=` stats."""
    args = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "info"]
    if headers:
        args += ["-headers", headers]
    args += ["-i", url, "-map", stream, "-f", "null", "-"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    frames = [line for line in out.stderr.replace("\r", "\n").splitlines() if line.startswith("frame=")]
    return int(frames[-1].split("=", 1)[1].split()[0])


def decoded_audio_seconds(url: str, headers: str | None = None) -> float:
    args = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "info"]
    if headers:
        args += ["-headers", headers]
    args += ["-i", url, "-map", "0:a:0", "-f", "null", "-"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    line = [s for s in out.stderr.replace("\r", "\n").splitlines() if "time=" in s][-1]
    hms = line.split("time=", 1)[1].split()[0]
    h, m, s = hms.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime_ns) of every file under root, temp files aside."""
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file() and not p.relative_to(root).as_posix().startswith(".")}


# Shared by conftest.py and the test modules (imported from here: two conftest.py modules can't
# both be imported by name in one pytest session).
SAMPLE_SECONDS = 5
SAMPLE_FPS = 30
SAMPLE_FRAMES = SAMPLE_SECONDS * SAMPLE_FPS
BUCKET = "origin-test"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}

TEST_CONFIG = """
[s3]
retry_mode = "standard"
max_attempts = 4
multipart_threshold_bytes = 5242880
multipart_chunk_bytes = 5242880
max_concurrency = 4

[encode]
preset = "ultrafast"
segment_s = 2
audio_bitrate_bps = 64000
poster_height = 90

[[encode.ladder]]
name = "72p"
height = 72
bitrate_bps = 80000
[[encode.ladder]]
name = "108p"
height = 108
bitrate_bps = 120000
[[encode.ladder]]
name = "144p"
height = 144
bitrate_bps = 160000
[[encode.ladder]]
name = "180p"
height = 180
bitrate_bps = 200000
[[encode.ladder]]
name = "144p-hevc"
height = 144
bitrate_bps = 100000
codec = "hevc"
[[encode.ladder]]
name = "144p-av1"
height = 144
bitrate_bps = 100000
codec = "av1"
"""
