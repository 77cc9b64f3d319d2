"""The appliance's hot path: one asyncio Protocol per client connection, under uvloop.

Why it is hand-written, when every other service here is aiohttp: the appliance does nginx's job —
a byte range of a local file to a socket, tens of thousands of times a second per core — and on
these machines aiohttp's stack answered small ranges at ~0.1x nginx's rate, while uvloop's
transports do not take `loop.sendfile`, so every body byte would have been copied through Python.
So this module is only the HTTP/1.1 framing an appliance needs: httptools (llhttp, strict: it
refuses duplicate Content-Length, CL+TE, bad header tokens, bare LF) parses; `oca.core.request.plan`
decides, with the same contracts (ranges, tokens) as everything else; and the response goes out on
a socket object over the transport's own descriptor — the head with MSG_MORE, then `os.sendfile`
from the descriptor kept open, waiting for writability with `add_writer` (on a dup) when the kernel
buffer is full. The uvloop transport only reads and closes; every write goes through our socket, so
writes never interleave. tests/oca/test_nginx_differential.py holds its answers to nginx's.

Per-request Python is what limits small ranges (about 3.5 µs of it per 16 KiB range, parsing
included, beside the kernel's share), so the common case is one flat pass, `_fast`: a keep-alive
GET for one plain range of an open file through a URL already verified — `single_range` rather than
parse_range's verdict objects, one metrics call (`served`), the access log's `hit` — which returns
False before a byte goes out for anything else, and the general path answers that. It is two steps:
`_fast_verdict` decides (file, offset, length, head; nothing sent) and `_fast` sends with sendfile;
TlsConnection (tls.py) takes the same verdict and sends through its TLS writer. No timer objects
(each connection carries a deadline that the worker's sweep checks twice a second), no request
object unless requests are pipelined (the fields of the request being parsed are the connection's,
declared in __init__), header bytes assembled once with `%`.
"""
from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from collections import deque
from operator import attrgetter
from typing import Any

import httptools

from contracts.ranges import Partial, Unsatisfiable, multipart_layout, single_range
from contracts.token import TokenError, check_grant
from oca.core.request import Health, Refuse, Serve, plan
from oca.http.files import FileOpenError, OpenFile
from oca.http.state import ServerState
from oca.http.writer import MSG_MORE, NEVER, FilePart, Request, ResponseWriter, file_head, range_head

_facts = attrgetter("facts")
_MAX_QUEUED = 32  # pipelined requests held before we stop reading


class _Reject(Exception):
    def __init__(self, refuse: Refuse) -> None:
        self.refuse = refuse


class Connection(ResponseWriter, asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: ServerState) -> None:
        # the worker's state
        self.server = server
        self.config = server.config
        # per-connection state (connection_made fills in the transport's part)
        self.transport: Any = None
        self.sock: socket.socket | None = None  # over the transport's descriptor; writes go through it
        self.sock_fd = -1
        self.writer_fd = -1  # a dup, only while waiting to write (see writer._wait_writable)
        self.client: str | None = None
        self.log_client: Any = None  # this client's part of every access-log line
        self.parser: Any = None  # httptools.HttpRequestParser
        self.allowed_prefix: Any = None  # a token prefix this connection's client is known to be in
        self.deadline = NEVER  # header, idle or send timeout: the worker's sweep checks it
        self.closed = False
        self.torn_down = False
        # flow control: requests waiting their turn (pipelining), what is left to send of a response
        self.queue: deque[Request] = deque()
        self.out: deque[Any] = deque()
        self.busy = False  # a response is being sent
        self.writing = False  # waiting for the socket to take more
        self.reading_paused = False
        self.close_after = False
        self.fresh = True  # no request begun yet: a drain must not drop the first one, maybe on its way
        # per-request state: the head being parsed. No request object unless requests queue up (the
        # fast path reads these fields); on_message_begin resets them.
        self.in_head = False
        self.head_bytes = 0
        self.pending_bytes = 0
        self.url = b""
        self.h_range: str | None = None
        self.h_if_range: str | None = None
        self.h_request_id: str | None = None
        self.h_authorization: str | None = None
        self.h_user_agent: bytes | None = None  # raw bytes, for the combined access log
        self.h_referer: bytes | None = None
        self.h_host = 0  # how many Host headers
        self.h_body = False  # a Content-Length or Transfer-Encoding announced a body
        self.version = "1.1"  # of the request being parsed (httptools formats it anew on each ask)
        # per-response state (the general path's; the fast path sets it only when the writer takes over)
        self.req: Request | None = None
        self.current: OpenFile | None = None  # the file being sent, held (refs) until the response ends
        self.refused: Refuse | None = None
        self.status = 0
        self.body_bytes = 0
        self.t0 = 0.0

    # ---- connection lifecycle -------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        server = self.server
        if len(server.connections) >= self.config.max_connections:
            transport.abort()
            self.closed = True
            return
        raw = transport.get_extra_info("socket")
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if peer else None
        log = server.access_log  # this client's part of every access-log line, made once
        self.log_client = log.client_piece(self.client) if log is not None else None
        # A socket object over the transport's own descriptor (detached, never closed, at teardown):
        # an idle connection costs one descriptor. A dup exists only while waiting to write.
        self.sock = socket.socket(fileno=raw.fileno())
        self.sock_fd = self.sock.fileno()
        server.connections.add(self)
        server.metrics.add("open_connections", 1)
        server.metrics.add("connections_total", 1)
        self.parser = httptools.HttpRequestParser(self)
        self.deadline = server.clock + self.config.header_timeout_s
        if server.draining:  # accepted just before the listener closed: its request is answered, then it closes
            self.close_after = True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sock is None:
            return
        if self.busy:
            self.server.metrics.add("client_aborts")
        self._teardown()

    def eof_received(self) -> bool:
        # The client half-closed: finish what it asked for, then close.
        self.close_after = True
        if not self.busy and not self.queue:
            self.close()
        return True

    def _teardown(self) -> None:
        if self.torn_down or self.sock is None:
            return
        self.torn_down = True
        self.closed = True
        self._stop_writer()
        if self.busy and self.out:  # a response cut short (client gone, a timeout, a failed disk, the drain's end)
            self._log_cut_short()
        self._release_current()
        self.out.clear()
        self.sock.detach()  # the transport owns the descriptor and closes it
        self.server.connections.discard(self)
        self.server.metrics.add("open_connections", -1)

    def close(self) -> None:
        """Drop the writer's dup first: the kernel sends FIN only once no descriptor is left."""
        if self.closed:
            return
        self.closed = True
        self._teardown()
        self.transport.close()

    def drain(self) -> None:
        """Graceful stop: a connection between two requests closes now, a busy one after its current
        response. One that was accepted but has sent no whole head yet is not dropped: its request may
        be on the wire (a reload closes the listener a moment after it accepted), so it is answered,
        with Connection: close, or closed at its header deadline like any slow client."""
        self.close_after = True
        if not self.busy and not self.queue and not self.in_head and not self.fresh:
            self.close()

    def check_deadline(self, now: float) -> None:
        """Called by the worker's sweep: header, idle and send timeouts."""
        if now < self.deadline or self.closed:
            return
        metrics = self.server.metrics
        metrics.add("timeouts")
        if self.writing:
            self.server.log_event("send-timeout", client=self.client)
            self.close()
        elif self.in_head and not self.busy:  # slowloris or a stalled client: tell it, hang up
            self._respond_error(Refuse(408, "header-timeout"), None, close=True)
        elif not self.busy:
            self.close()
        else:
            self.deadline = NEVER

    # ---- parsing ----------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        was_in_head = self.in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                refuse = cause.refuse
            else:  # a bug of ours: answer 500 and say what it was
                refuse = Refuse(500, "internal", repr(cause))
                self.server.log_event("internal-error", error=repr(cause), client=self.client)
            self._fail_parse(refuse)
            return
        except httptools.HttpParserUpgrade as exc:
            # RFC 9110 §7.8: a server may ignore Upgrade. The request was answered as plain HTTP;
            # llhttp stops at it, so what follows is the next request, for a fresh parser.
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            self.parser = httptools.HttpRequestParser(self)
            if offset < len(data):
                self.data_received(data[offset:])
            return
        except httptools.HttpParserError as exc:
            self._fail_parse(Refuse(400, "bad-request", str(exc)))
            return
        if self.in_head:
            # Bounded buffering of an incomplete head (httptools holds it until a header ends).
            self.pending_bytes = self.pending_bytes + len(data) if was_in_head else 0
            if self.pending_bytes + self.head_bytes > self.config.max_header_bytes:
                self._fail_parse(Refuse(431, "header-too-large"))

    def _fail_parse(self, refuse: Refuse) -> None:
        self.transport.pause_reading()
        self.in_head = False
        self.queue.append(Request("GET", b"", None, None, False, None, "1.1", refuse=refuse))
        self.close_after = True
        if not self.busy:
            self._next()

    def on_message_begin(self) -> None:
        self.in_head = True
        self.fresh = False
        self.head_bytes = 0
        self.pending_bytes = 0
        self.url = b""
        self.h_range = self.h_if_range = self.h_request_id = self.h_authorization = None
        self.h_user_agent = self.h_referer = None  # raw bytes, for the combined access log
        self.h_host = 0
        self.h_body = False
        if not self.busy:
            self.deadline = self.server.clock + self.config.header_timeout_s

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)
        if self.head_bytes > self.config.max_header_bytes:
            raise _Reject(Refuse(414 if len(self.url) > self.config.max_header_bytes else 431, "uri-too-long"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.config.max_header_bytes:
            raise _Reject(Refuse(431, "header-too-large"))
        n = name.lower()
        if n == b"range":
            if self.h_range is None:  # a repeated Range: the first counts, as in nginx
                self.h_range = value.decode("latin-1")
        elif n == b"host":
            self.h_host += 1
        elif n == b"if-range":
            self.h_if_range = value.decode("latin-1")
        elif n == b"content-length":
            if value.strip() not in (b"0", b""):
                self.h_body = True
        elif n == b"transfer-encoding":
            self.h_body = True
        elif n == b"authorization":
            self.h_authorization = value.decode("latin-1")
        elif n == b"x-request-id":
            rid = value[:64].decode("latin-1")
            self.h_request_id = rid if rid.replace("-", "").replace("_", "").replace(".", "").isalnum() else None
        elif n == b"user-agent":
            self.h_user_agent = value
        elif n == b"referer":
            self.h_referer = value

    def on_headers_complete(self) -> None:
        self.in_head = False
        if not self.busy:
            self.deadline = NEVER
        self.version = version = self.parser.get_http_version()
        if version != "1.1":
            if version != "1.0":
                raise _Reject(Refuse(505, "http-version"))
        elif self.h_host != 1:
            raise _Reject(Refuse(400, "host-header", "HTTP/1.1 needs exactly one Host header"))
        # A body on GET/HEAD is how request smuggling hides a second request: refuse, then close.
        if self.h_body:
            raise _Reject(Refuse(400, "body-not-allowed"))

    def on_message_complete(self) -> None:
        parser = self.parser
        if not self.busy and not self.queue and self._fast(parser):
            return
        req = Request(parser.get_method().decode("latin-1"), self.url, self.h_range, self.h_if_range,
                      parser.should_keep_alive(), self.h_request_id, self.version,
                      authorization=self.h_authorization, user_agent=self.h_user_agent, referer=self.h_referer)
        if not self.busy and not self.queue:
            self._handle(req)  # the common case: no pipelining; _finish moves on
            return
        self.queue.append(req)
        if not self.busy:
            self._next()
        elif len(self.queue) > _MAX_QUEUED and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    # ---- answering ----------------------------------------------------------------------------
    def _fast(self, parser: Any) -> bool:
        """The hot path for the overwhelmingly common request: a keep-alive HTTP/1.1 GET for one
        plain range (or all) of an open file, through a URL whose key and signature were already
        checked (`_fast_verdict`), answered with one send and one sendfile. Anything else returns
        False before a byte is sent, and the general path answers it. TlsConnection has its own
        (the same verdict, its own writer)."""
        if not self.server.use_sendfile:
            return False
        verdict = self._fast_verdict(parser)
        if verdict is None:
            return False
        of, start, count, status, head, now = verdict
        t0 = time.perf_counter()
        sent = done = 0
        try:
            sent = self.sock.send(head, MSG_MORE)
            if sent == len(head):
                done = os.sendfile(self.sock_fd, of.fd, start, count)
                if done == count:  # all of it: account and wait for the next request
                    self._fast_served(of, status, count, now, t0)
                    return True
        except OSError:
            if sent == 0:
                return False  # nothing went out: the general path retries and handles the error
        # The kernel buffer filled (or an error is pending): the general writer takes over.
        self._fast_takeover(of, head[sent:], start + done, count - done, done, status, t0)
        return True

    def _fast_verdict(self, parser: Any) -> tuple[OpenFile, int, int, int, bytes, float] | None:
        """The fast path's decision, sending nothing: (file, offset, length, status, head, wall
        clock) for a keep-alive HTTP/1.1 GET of one plain range (or all) of an open file through a
        URL already verified, else None (the general path answers). The decisions are the core's
        own (`check_grant`, `single_range` — parse_range's answer for one plain range); only the
        layers around them are skipped. A tuple, not an object: this runs once per request."""
        server = self.server
        if (self.h_if_range is not None or self.h_request_id is not None or self.h_authorization is not None
                or parser.get_method() != b"GET" or self.version != "1.1"
                or not parser.should_keep_alive() or server.draining):
            return None
        known = server.memo.get(self.url)
        if known is None:
            return None
        grant = known.grant
        now = time.time()
        if grant.client_prefix is not None and grant.client_prefix is self.allowed_prefix:
            if now > grant.expires_at:  # this connection's client is inside: only expiry
                return None
        else:
            try:  # expiry and client prefix: the core's own check
                check_grant(grant, now, self.client)
            except TokenError:
                return None  # the general path answers the 403 with its reason
            self.allowed_prefix = grant.client_prefix  # the client of a connection never changes
        of = server.files.open_file(known.key)
        if of is None:
            return None
        size = of.facts.size
        header = self.h_range
        if header is None:
            if size == 0:
                return None
            return of, 0, size, 200, file_head(200, server.date_header, of, 0, size, b"\r\n"), now
        span = single_range(header, size)
        if span is None:  # several ranges, a 416, another spelling: the general path
            return None
        start, end = span
        return of, start, end - start, 206, range_head(server.date_header, of, start, end), now

    def _fast_served(self, of: OpenFile, status: int, count: int, now: float, t0: float) -> None:
        """A fast-path response went out whole: one metrics call, the popularity tally, the access
        log's `hit` (the line `request` would write), and the keep-alive deadline."""
        server = self.server
        seconds = time.perf_counter() - t0
        server.metrics.served(status, of.tier, count, seconds)
        tally = server.hits.get(of.key)  # the popularity tally, as record_hit keeps it
        if tally is None:
            server.hits[of.key] = [1, count]
        else:
            tally[0] += 1
            tally[1] += count
        log = server.access_log
        if log is not None:
            log.hit(self.log_client, self.url, self.h_range, status, count, now, seconds, of, self.h_user_agent,
                    self.h_referer)
        self.deadline = server.clock + self.config.keepalive_timeout_s

    def _fast_takeover(self, of: OpenFile, head: bytes, offset: int, count: int, done: int, status: int,
                       t0: float) -> None:
        """A fast-path response that could not go out at once: the general writer sends the rest
        (`head`, what is left of it, then `count` bytes of the file from `offset`; `done` body
        bytes went out already) and accounts for it as for any response (`_finish`: the same
        metrics and log line)."""
        server = self.server
        self.t0 = t0
        server.metrics.hit()
        self.busy = True
        self.status = status
        self.req = Request("GET", self.url, self.h_range, None, True, None, "1.1", user_agent=self.h_user_agent,
                           referer=self.h_referer) if server.access_log is not None else None
        of.refs += 1
        self.current = of
        self.body_bytes = done  # body bytes already sent
        if head:
            self.out.append(head)
        self.out.append(FilePart(of, offset, count))
        self._pump()

    def _next(self) -> None:
        while self.queue and not self.busy and not self.closed:
            req = self.queue.popleft()
            if req.refuse is not None:
                self.queue.clear()
                self._respond_error(req.refuse, None, close=True)
                return
            self._handle(req)
        if not self.busy:
            self._idle()

    def _idle(self) -> None:
        """Nothing to send: close if asked to, else wait for the next request."""
        if self.closed:
            return
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()
        if self.close_after:
            self.close()
        elif self.in_head:
            self.deadline = self.server.clock + self.config.header_timeout_s
        else:
            self.deadline = self.server.clock + self.config.keepalive_timeout_s

    def _decide(self, req: Request) -> Any:
        """The request's verdict; None once an error response has been sent. A file that moved to
        another disk under us (the mover) is tried again at its new place, once."""
        server = self.server
        for retry in (True, False):
            try:
                return plan(req.method, req.target, req.range, req.if_range, self.client, server.keys,
                            time.time(), server.files.acquire_key, _facts, server.memo, req.authorization)
            except FileOpenError as exc:
                if exc.error.errno in (errno.EMFILE, errno.ENFILE):  # our limit, not the disk's: shed
                    server.disk_error(exc.entry.disk, exc.error, exc.entry.key)
                    self.close_after = True
                    self._respond_error(Refuse(503, "overloaded", "out of file descriptors"), req)
                    return None
                if not (server.disk_error(exc.entry.disk, exc.error, exc.entry.key) and retry):
                    self._respond_error(Refuse(503, "disk-error", str(exc)), req)
                    return None
        return None

    def _handle(self, req: Request) -> None:
        server = self.server
        self.t0 = time.perf_counter()
        self.req = req
        if not req.keep_alive or server.draining:
            self.close_after = True
        if req.method == "OPTIONS":
            self._respond_preflight(req)
            return
        verdict = self._decide(req)
        if verdict is None:
            return
        if type(verdict) is Serve:
            self._serve(req, verdict)
        elif type(verdict) is Refuse:
            if verdict.status == 403:
                server.metrics.token_refused(verdict.reason)
            elif verdict.status == 404:
                server.metrics.add("misses")
                if server.puller is not None and req.authorization is None:
                    self._await_pull(req, verdict)
                    return
            self._respond_error(verdict, req, close=verdict.status in (400, 405))
        elif type(verdict) is Health:
            self._respond_simple(200, b"ok\n", req)

    def _await_pull(self, req: Request, miss: Refuse) -> None:
        """Pull-through: hold the request while the worker fetches the file from the parent, up to
        `wait_s`; then serve it, or give the fast 404 and let the fetch finish in the background.
        Fill fetches (with an Authorization token) never trigger a pull: no chains of parents."""
        server = self.server
        pull = server.puller.pull(miss.detail)
        if pull is None:
            self._respond_error(miss, req)
            return
        self.busy = True
        settled = False

        def resume(*_: Any) -> None:
            nonlocal settled
            if settled or self.closed:
                return
            settled = True
            timer.cancel()
            self.busy = False
            if pull.done() and not pull.cancelled() and pull.exception() is None:
                self._handle(req)  # held now: answered like any hit
            else:
                self._respond_error(Refuse(404, "not-held", "pull in progress or failed"), req)

        timer = server.loop.call_later(server.pull_wait_s, resume)
        pull.add_done_callback(resume)

    def _serve(self, req: Request, verdict: Serve) -> None:
        of: OpenFile = verdict.entry
        self.current = of
        self.server.metrics.hit()
        size = of.entry.size
        decision = verdict.verdict
        body = req.method != "HEAD"
        if type(decision) is Partial:
            ranges = decision.ranges
            if len(ranges) == 1:  # the hot path: one range, headers formatted in one go
                start, end = ranges[0]
                head = file_head(206, self.server.date_header, of, start, end, self._tail(req))
                self._start(206, head, [FilePart(of, start, end - start)] if body else None)
                return
            layout = multipart_layout(ranges, size, of.content_type, self.server.boundary())
            head = self._head(206, req, layout.content_type, layout.length, of.static_headers)
            parts: list[Any] = []
            for part_head, r in zip(layout.heads, ranges):
                parts += (part_head, FilePart(of, r.start, r.length))
            parts.append(layout.tail)
            self._start(206, head, parts if body else None)
        elif type(decision) is Unsatisfiable:
            self._release_current()
            self._respond_error(Refuse(416, "range-not-satisfiable"), req,
                                extra=f"Content-Range: bytes */{size}\r\n")
        else:
            head = file_head(200, self.server.date_header, of, 0, size, self._tail(req))
            self._start(200, head, [FilePart(of, 0, size)] if body and size else None)
