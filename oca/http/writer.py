"""The writing half of a client connection: response heads, and bodies sent with `send` (MSG_MORE
while more follows) and `os.sendfile` — or `pread` + `send` with sendfile off — on the dup of the
socket, waiting for writability with the loop's writer callback. A read error mid-body means the
file (its disk) failed: the connection is cut, since a body can't be taken back, and the disk is
reported so nobody else is sent there. `Connection` (protocol.py) mixes this in.
"""
from __future__ import annotations

import errno
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from oca.core.request import Refuse
from oca.http.files import OpenFile

if TYPE_CHECKING:
    from collections import deque

    from oca.http.state import ServerState

REASONS = {
    200: "OK", 204: "No Content", 206: "Partial Content", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large", 414: "URI Too Long",
    416: "Range Not Satisfiable", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
STATUS_LINES = {code: f"HTTP/1.1 {code} {reason}\r\n".encode() for code, reason in REASONS.items()}
_SOCKET_ERRNOS = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ETIMEDOUT,
                            errno.ECONNABORTED, errno.EBADF})
_COPY_CHUNK = 256 * 1024
NEVER = float("inf")
MSG_MORE = socket.MSG_MORE

class Request:
    """A parsed request waiting its turn (pipelining) or being answered."""

    __slots__ = ("method", "target", "range", "if_range", "keep_alive", "request_id", "version", "refuse",
                 "authorization", "user_agent", "referer")

    def __init__(self, method: str, target: bytes, range_: str | None, if_range: str | None,
                 keep_alive: bool, request_id: str | None, version: str, refuse: Refuse | None = None,
                 authorization: str | None = None, user_agent: bytes | None = None,
                 referer: bytes | None = None) -> None:
        self.authorization = authorization
        self.user_agent = user_agent  # raw, for the combined access log
        self.referer = referer
        self.method = method
        self.target = target
        self.range = range_
        self.if_range = if_range
        self.keep_alive = keep_alive
        self.request_id = request_id
        self.version = version
        self.refuse = refuse


class FilePart:
    __slots__ = ("of", "offset", "count")

    def __init__(self, of: OpenFile, offset: int, count: int) -> None:
        self.of = of
        self.offset = offset
        self.count = count


def file_head(status: int, date_header: bytes, of: OpenFile, start: int, end: int, tail: bytes) -> bytes:
    """The head of a 200 (the whole file) or a single-range 206, formatted in one go: this runs per
    request on the hot path."""
    if status == 200:
        return b"%s%s%sContent-Length: %d\r\n%s%s" % (
            STATUS_LINES[200], date_header, of.type_line, end - start, of.static_headers, tail)
    return b"%s%s%sContent-Length: %d\r\nContent-Range: bytes %d-%d/%d\r\n%s%s" % (
        STATUS_LINES[206], date_header, of.type_line, end - start, start, end - 1, of.entry.size,
        of.static_headers, tail)


def range_head(date_header: bytes, of: OpenFile, start: int, end: int) -> bytes:
    """What `file_head` makes for a single-range 206 that keeps the connection open, from the file's
    cached pieces: the hot path's head in one format of five values."""
    if of.head_date is not date_header:
        of.head_date = date_header
        of.head_206 = STATUS_LINES[206] + date_header + of.type_line
    return b"%sContent-Length: %d\r\nContent-Range: bytes %d-%d%s" % (of.head_206, end - start, start, end - 1,
                                                                        of.range_tail)


class ResponseWriter:
    server: "ServerState"
    sock: socket.socket
    sock_fd: int
    writer_fd: int
    out: "deque[Any]"
    current: OpenFile | None
    close_after: bool
    closed: bool
    writing: bool
    busy: bool
    req: "Request | None"
    refused: Refuse | None
    log_client: Any

    def _tail(self, req: Request | None) -> bytes:
        """The end of a response head: connection handling, the request id, the blank line."""
        tail = b"\r\n"
        if self.close_after:
            tail = b"Connection: close\r\n\r\n"
        elif req is not None and req.version == "1.0":
            tail = b"Connection: keep-alive\r\n\r\n"
        if req is not None and req.request_id:
            tail = f"X-Request-Id: {req.request_id}\r\n".encode() + tail
        return tail

    def _head(self, status: int, req: Request | None, content_type: str, length: int, extra: bytes) -> bytes:
        return b"%s%sContent-Type: %s\r\nContent-Length: %d\r\n%s%s" % (
            STATUS_LINES[status], self.server.date_header, content_type.encode(), length, extra, self._tail(req))

    def _respond_error(self, refuse: Refuse, req: Request | None, close: bool = False, extra: str = "") -> None:
        if close:
            self.close_after = True
        if req is None:
            self.t0 = time.perf_counter()
            self.req = None
        if refuse.status == 405:
            extra += "Allow: GET, HEAD\r\n"
        elif refuse.status == 503:
            extra += "Retry-After: 5\r\n"
        body = f"{refuse.status} {REASONS.get(refuse.status, '')}: {refuse.reason}\n".encode()
        extra_b = f"X-Oca-Reason: {refuse.reason}\r\n{extra}".encode() + self.server.cors
        head = self._head(refuse.status, req, "text/plain; charset=utf-8", len(body), extra_b)
        self.refused = refuse
        self._start(refuse.status, head, None if req is not None and req.method == "HEAD" else [body])

    def _respond_preflight(self, req: Request) -> None:
        """CORS preflight (a player asking to send Range or If-Range from another origin)."""
        extra = self.server.cors
        if extra:
            extra += (b"Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n"
                      b"Access-Control-Allow-Headers: Range, If-Range\r\nAccess-Control-Max-Age: 86400\r\n")
        head = self._head(204, req, "text/plain", 0, extra + b"Allow: GET, HEAD, OPTIONS\r\n")
        self._start(204, head.replace(b"Content-Length: 0\r\n", b""), None)

    def _respond_simple(self, status: int, body: bytes, req: Request) -> None:
        head = self._head(status, req, "text/plain; charset=utf-8", len(body), b"Cache-Control: no-store\r\n")
        self._start(status, head, None if req.method == "HEAD" else [body])

    # ---- writing ------------------------------------------------------------------------------
    def _start(self, status: int, head: bytes, body: list[Any] | None) -> None:
        self.busy = True
        self.status = status
        self.body_bytes = 0
        out = self.out
        out.append(head)
        if body:
            out.extend(body)
        self._pump()

    def _pump(self) -> None:
        out = self.out
        sock = self.sock
        try:
            while out:
                item = out[0]
                if type(item) is bytes:
                    sent = sock.send(item, MSG_MORE if len(out) > 1 else 0)
                    if sent < len(item):
                        out[0] = item[sent:]
                        self._wait_writable()
                        return
                    out.popleft()
                    continue
                if not self.server.use_sendfile:
                    data = os.pread(item.of.fd, min(item.count, _COPY_CHUNK), item.offset)
                    if not data:
                        raise _Truncated(item.of)
                    item.offset += len(data)
                    item.count -= len(data)
                    self.body_bytes += len(data)
                    if item.count == 0:
                        out.popleft()  # so MSG_MORE is not set on the last bytes
                    out.appendleft(data)
                    continue
                sent = os.sendfile(self.sock_fd, item.of.fd, item.offset, item.count)
                if sent == 0:
                    raise _Truncated(item.of)
                self.body_bytes += sent
                if sent == item.count:
                    out.popleft()
                else:
                    item.offset += sent
                    item.count -= sent
        except BlockingIOError:
            self._wait_writable()
            return
        except _Truncated as exc:
            self._on_file_error(exc.of, OSError(errno.EIO, "file shorter than its index entry"))
            return
        except OSError as exc:
            if exc.errno in _SOCKET_ERRNOS or self.current is None:
                self.server.metrics.add("client_aborts")
                self.close()
            else:
                self._on_file_error(self.current, exc)
            return
        self._finish()

    def _on_file_error(self, of: OpenFile, exc: OSError) -> None:
        """A read failed mid-response: the body can't be completed, so cut the connection (the
        player retries its next URL) and fail the disk so no one else is sent there."""
        self.server.disk_error(of.entry.disk, exc, of.key)
        self.close()

    def _wait_writable(self) -> None:
        if not self.writing:
            # uvloop won't watch a descriptor its transport owns, so the writer watches a dup, made
            # here and closed when the response is done: idle connections hold one descriptor.
            self.writing = True
            self.writer_fd = os.dup(self.sock_fd)
            self.server.loop.add_writer(self.writer_fd, self._on_writable)
        self.deadline = self.server.clock + self.config.send_timeout_s

    def _on_writable(self) -> None:
        # The writer stays registered until the response is done: a big body waits for the
        # socket many times, and each add/remove pair is two epoll_ctl calls.
        self.deadline = NEVER
        if not self.closed:
            self._pump()

    def _finish(self) -> None:
        server = self.server
        self._stop_writer()
        of = self.current
        if of is not None:
            server.record_hit(of, self.body_bytes)
            self.current = None
            of.release()
        seconds = time.perf_counter() - self.t0
        server.metrics.response(self.status, seconds)
        log = server.access_log
        if log is not None:
            refused = self.refused
            log.request(self.log_client, self.req, self.status, self.body_bytes, seconds, of,
                        refused.reason if refused is not None and self.status >= 400 else None)
        self.busy = False
        self._next()

    def _log_cut_short(self) -> None:
        """The access-log line of a response that ends before its last byte: the bytes that went out
        (as nginx logs them), `reason: cut-short`."""
        log = self.server.access_log
        if log is not None:
            log.request(self.log_client, self.req, self.status, self.body_bytes, time.perf_counter() - self.t0,
                        self.current, "cut-short")

    def _stop_writer(self) -> None:
        if self.writing:
            self.server.loop.remove_writer(self.writer_fd)
            os.close(self.writer_fd)
            self.writer_fd = -1
            self.writing = False

    def _release_current(self) -> None:
        if self.current is not None:
            self.current.release()
            self.current = None


class _Truncated(Exception):
    def __init__(self, of: OpenFile) -> None:
        self.of = of
