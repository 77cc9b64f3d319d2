"""What the aiohttp services' abuse tests share: floods of raw connections (idle, half a request head,
or one request then idle) from a chosen loopback source address (Linux routes all of 127/8 to lo, so
127.0.0.2 is "another client"), raw HTTP exchanges, a server process's descriptors and RSS read from /proc, and the
flood-is-shed check every service runs (`shed_flood`)."""
from __future__ import annotations

import os
import selectors
import socket
import time
from dataclasses import dataclass
from typing import Callable

from tests.steering.steer_helpers import wait_until

HALF_HEAD = b"GET /healthz HTTP/1.1\r\nHost: flood\r\nX-Slow: "  # never finished
FULL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: flood\r\n\r\n"


@dataclass(frozen=True)
class ProcStats:
    fds: int
    rss_kb: int

    def __str__(self) -> str:
        return f"{self.fds} fds, RSS {self.rss_kb / 1024:.1f} MB"


def proc_stats(pid: int) -> ProcStats:
    with open(f"/proc/{pid}/status") as fh:
        rss = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    return ProcStats(len(os.listdir(f"/proc/{pid}/fd")), rss)


def connect(port: int, source: str = "127.0.0.1", timeout_s: float = 5.0) -> socket.socket:
    s = socket.socket()
    s.settimeout(timeout_s)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def read_reply(s: socket.socket, timeout_s: float = 5.0) -> bytes:
    """One whole HTTP response (head + Content-Length body), or what came before the server closed."""
    s.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data or len(data) < _length(data):
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def _length(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(head) + 4


class Flood:
    """`n` connections, each sent `payload` (b"": idle; HALF_HEAD: a slowloris head; FULL_HEAD: one
    request, whose response is read, then idle)."""

    def __init__(self, port: int, n: int, payload: bytes = b"", source: str = "127.0.0.1") -> None:
        self.started = time.monotonic()
        self.socks = [connect(port, source) for _ in range(n)]
        self.replies = [b""] * n
        for i, s in enumerate(self.socks):
            if payload:
                s.sendall(payload)
            if payload == FULL_HEAD:
                self.replies[i] = read_reply(s)

    def wait_closed(self, timeout_s: float) -> float:
        """Seconds from the flood's start until the server had closed every connection (each read to
        its end; what it sent is added to `replies`)."""
        left = len(self.socks) - len(self._drain(time.monotonic() + timeout_s, until_all=True))
        if left:
            raise AssertionError(f"{left} of {len(self.socks)} connections still open after {timeout_s} s")
        return time.monotonic() - self.started

    def closed_within(self, wait_s: float) -> list[int]:
        """The connections (indices) the server closed within `wait_s`; the others stay open."""
        return sorted(self._drain(time.monotonic() + wait_s, until_all=False))

    def _drain(self, deadline: float, until_all: bool) -> set[int]:
        closed: set[int] = set()
        sel = selectors.DefaultSelector()
        for i, s in enumerate(self.socks):
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, i)
        try:
            while len(closed) < len(self.socks) and (remaining := deadline - time.monotonic()) > 0:
                for key, _ in sel.select(min(remaining, 0.5)):
                    try:
                        data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    except ConnectionResetError:
                        data = b""
                    if data:
                        self.replies[key.data] += data
                    else:
                        sel.unregister(key.fileobj)
                        closed.add(key.data)
                if not until_all and remaining < 0.5:
                    break
        finally:
            sel.close()
        return closed

    def close(self) -> None:
        for s in self.socks:
            s.close()


def exchange(port: int, request: bytes, source: str = "127.0.0.1") -> bytes:
    """One raw request on a new connection; the whole response."""
    with connect(port, source) as s:
        s.sendall(request)
        return read_reply(s)


def send_until_refused(s: socket.socket, total: int, chunk: bytes) -> int:
    """Send `chunk` until `total` bytes went out or the server hung up; the bytes sent."""
    sent = 0
    s.settimeout(10)
    try:
        while sent < total:
            s.sendall(chunk)
            sent += len(chunk)
    except OSError:  # EPIPE / ECONNRESET: the server closed without reading the rest
        pass
    return sent


@dataclass(frozen=True)
class Shed:
    """A shed flood, for the record: the server's descriptors and RSS before, during and after it, and
    the seconds from its start until the server had closed every connection."""
    before: ProcStats
    during: ProcStats
    shed_s: float
    after: ProcStats

    def __str__(self) -> str:
        return (f"before {self.before}; during {self.during}; all shed {self.shed_s:.2f} s after the flood "
                f"began; after {self.after}")


def shed_flood(pid: int, port: int, n: int, payload: bytes, reply: bytes, serve: Callable[[], None]) -> Shed:
    """`n` connections sent `payload` (see Flood) to the server `pid` listening on `port` (header
    timeout 2 s, idle timeout 3 s): while they are all open `serve()` (which asserts) passes five
    times; then the server closes every one within its timeouts, each having answered a reply that
    starts with `reply`, and its descriptors come back to where they were."""
    before = proc_stats(pid)
    flood = Flood(port, n, payload)
    try:
        wait_until(lambda: proc_stats(pid).fds >= before.fds + n * 0.95, timeout_s=10)
        during = proc_stats(pid)
        for _ in range(5):
            serve()
        assert proc_stats(pid).fds >= before.fds + n * 0.9  # the flood was still there meanwhile
        shed_s = flood.wait_closed(timeout_s=3.0 + 4.0)  # timeouts 2 s (head), 3 s (idle); sweeps 0.5 s
        assert all(r.startswith(reply) for r in flood.replies), {r[:40] for r in flood.replies}
        wait_until(lambda: proc_stats(pid).fds <= before.fds + 2, timeout_s=5)
        after = proc_stats(pid)
    finally:
        flood.close()
    return Shed(before, during, shed_s, after)
