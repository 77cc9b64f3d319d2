"""HTTPS on the appliance: the same protocol and verdicts as plain HTTP, over uvloop's TLS transport.

Strategy. Each worker listens on the TLS port (SO_REUSEPORT, like the plain one). A new TCP
connection first reads its ClientHello itself (`_Hello`, with oca.core.tls.scan_client_hello),
under one deadline for the whole handshake: first bytes that are not a TLS handshake record get a
clear-text `400` (plain HTTP sent to the TLS port, as nginx answers it), a server name no
certificate carries gets the `unrecognized_name` alert when that is the policy (oca/tlsconf.py),
and either closes the connection. Otherwise the bytes read go into uvloop's SSL protocol with the
current contexts (one per certificate, chosen by SNI) and what is left of the deadline. Whatever
ends a handshake early — those two, a stall, a reset, no shared cipher — closes the connection and
is counted by outcome (oca.core.tls.HandshakeOutcome). A finished handshake gets a `TlsConnection`:
the plain `Connection` (parsing, decisions, responses, timeouts) with another writing half.

Without kernel TLS, sendfile cannot carry bodies: the writer fills one buffer per worker — the
response head copied in, file bytes `preadv`ed straight after it from the descriptor kept open (no
per-request open) — and hands up to `CHUNK` bytes at a time to the transport, which encrypts them
synchronously into its outgoing buffer (so the buffer is free again when `write` returns). The hot
path is the plain one's: `_fast` takes `Connection._fast_verdict` and, for a 16 KiB range, sends
head and body in one write and accounts with `_fast_served`; the general path (`_pump`) answers
everything else, and takes over a fast response the transport asks to pause. Flow control is the
transport's: `pause_writing` stops the pump, `resume_writing` continues it, and the send timeout
runs while paused.

Certificates are reloaded (SIGHUP, or a changed file seen every `reload_check_s`) by building new
contexts; connections keep the context they were accepted with, so none is dropped. A bad file
keeps the last good contexts.
"""
from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from typing import Any

from contracts.structconf import ConfigError
from oca.core.tls import (MAX_HELLO_BYTES, UNRECOGNIZED_NAME, HandshakeOutcome, HelloState, alert_record,
                          classify_failure, scan_client_hello)
from oca.http.protocol import Connection
from oca.http.state import ServerState
from oca.http.writer import NEVER, STATUS_LINES
from oca.tlsconf import Contexts, TlsConfig

try:  # the SSL protocol uvloop's own TLS servers use (asyncio's has the same signature)
    from uvloop.loop import SSLProtocol as _SSLProtocol
except ImportError:  # pragma: no cover
    from asyncio.sslproto import SSLProtocol as _SSLProtocol

CHUNK = 256 * 1024  # bytes handed to the TLS transport per write (16 records of 16 KiB)
HIGH_WATER = 512 * 1024  # encrypted bytes queued per connection before the pump pauses
LOW_WATER = 128 * 1024
_PLAIN_BODY = b"400 Bad Request: plain-http-to-tls-port\nThe plain HTTP request was sent to HTTPS port\n"
_UNRECOGNIZED_NAME_ALERT = alert_record(UNRECOGNIZED_NAME)


class TlsListener:
    """One worker's TLS side: its contexts, its body buffer, the handshakes in progress."""

    def __init__(self, config: TlsConfig, state: ServerState) -> None:
        self.config = config
        self.state = state
        self.contexts = Contexts(config)  # ConfigError at start-up: the worker fails
        self.buffer = bytearray(CHUNK)  # shared by every connection: each write consumes it at once
        self.view = memoryview(self.buffer)
        self.handshaking = 0  # connections accepted whose handshake has not ended (max_connections counts them)

    async def serve(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> asyncio.AbstractServer:
        return await loop.create_server(lambda: _Hello(self), sock=sock, backlog=4096)

    def count(self, outcome: HandshakeOutcome) -> None:
        self.state.metrics.add("tls_" + outcome.value)

    def admit(self) -> bool:
        state = self.state
        return not state.draining and len(state.connections) + self.handshaking < state.config.max_connections

    # ---- reload ---------------------------------------------------------------------------
    def maybe_reload(self) -> None:
        if self.contexts.changed(self.config):
            self.reload()

    def reload(self) -> None:
        try:
            fresh = Contexts(self.config)
        except ConfigError as exc:
            self.state.log_event("tls-reload-failed", error=str(exc))
            return
        self.contexts = fresh
        self.state.log_event("tls-reloaded", certificates=[list(f.names) for f in fresh.facts])

    # ---- the handshake, once the ClientHello is read ---------------------------------------
    def wrap(self, transport: Any, first: bytes, timeout_s: float) -> None:
        """Put TLS between the TCP transport and a new `TlsConnection`, and hand it the bytes read
        so far. The SSL protocol calls the connection's `connection_made` when the handshake
        succeeds; the waiter tells us either way."""
        state = self.state
        waiter = state.loop.create_future()
        tls = _SSLProtocol(state.loop, TlsConnection(state, self), self.contexts.default, waiter, server_side=True,
                           server_hostname=None, ssl_handshake_timeout=max(timeout_s, 0.001))
        transport.set_protocol(tls)  # reading goes on, into the SSL protocol's own buffer
        tls.connection_made(transport)
        waiter.add_done_callback(lambda done: self._handshake_done(transport, done))
        view = memoryview(first)
        while view and not transport.is_closing():
            buf = tls.get_buffer(len(view))
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            tls.buffer_updated(n)
            view = view[n:]

    def _handshake_done(self, transport: Any, done: asyncio.Future) -> None:
        self.handshaking -= 1
        exc = None if done.cancelled() else done.exception()
        if exc is None:
            self.count(HandshakeOutcome.OK)
            return
        reason = getattr(exc, "reason", None)
        outcome = classify_failure(type(exc).__name__, reason, str(exc), reason == "CALLBACK_FAILED")
        self.count(outcome)
        transport.abort()  # closed already by the SSL protocol in every case seen; never left open
        if outcome is HandshakeOutcome.FAILED:
            self.state.log_event("tls-handshake-failed", error=str(exc)[:200])


class _Hello(asyncio.Protocol):
    """A TCP connection on the TLS port until its ClientHello is read: then handed to TLS
    (`TlsListener.wrap`), or answered — a clear-text 400, an alert — and closed. One timer per
    connection (`handshake_timeout_s` for the whole handshake; the SSL protocol gets what is left)."""

    def __init__(self, listener: TlsListener) -> None:
        self.listener = listener
        self.transport: Any = None
        self.pending = b""  # the first bytes, until the ClientHello's record is all here
        self.started = 0.0  # loop time of the accept
        self.timer: asyncio.TimerHandle | None = None
        self.counted = False  # the handshake ended here (refused, timed out, reset) and was counted
        self.handed_over = False  # given to the SSL protocol, which reports through the listener

    def connection_made(self, transport: Any) -> None:
        listener = self.listener
        if not listener.admit():
            transport.abort()
            self.counted = True
            return
        self.transport = transport
        listener.handshaking += 1
        loop = listener.state.loop
        self.started = loop.time()
        self.timer = loop.call_later(listener.config.handshake_timeout_s, self._timeout)

    def data_received(self, data: bytes) -> None:
        if self.counted or self.handed_over:  # after a 400: the rest of the request, unread
            return
        if self.pending:
            data = self.pending + data
        scan = scan_client_hello(data)
        state = scan.state
        if state is HelloState.MORE and len(data) < MAX_HELLO_BYTES:
            self.pending = data
            return
        if state is HelloState.NOT_TLS:
            self._plain_http()
            return
        contexts = self.listener.contexts
        if state is HelloState.READ and contexts.choose(scan.server_name).index is None:
            self._end(HandshakeOutcome.UNKNOWN_SNI)
            self.transport.write(_UNRECOGNIZED_NAME_ALERT)
            self.transport.close()  # after the alert goes out
            return
        self.handed_over = True
        self.pending = b""
        self.timer.cancel()
        left = self.listener.config.handshake_timeout_s - (self.listener.state.loop.time() - self.started)
        self.listener.wrap(self.transport, data, left)

    def _plain_http(self) -> None:
        """An http:// request to the TLS port: a 400 in clear text, then close. Lingering: the rest
        of the request is read and dropped until the client closes or the deadline comes (closing
        with unread bytes would reset the connection, and the client might lose the answer)."""
        self._end(HandshakeOutcome.PLAIN_HTTP)
        self.timer = self.listener.state.loop.call_later(self.listener.config.handshake_timeout_s,
                                                         self.transport.close)
        head = b"%s%sContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n" \
               b"X-Oca-Reason: plain-http-to-tls-port\r\nConnection: close\r\n\r\n" % (
                   STATUS_LINES[400], self.listener.state.date_header, len(_PLAIN_BODY))
        self.transport.write(head + _PLAIN_BODY)
        if self.transport.can_write_eof():
            self.transport.write_eof()

    def _end(self, outcome: HandshakeOutcome) -> None:
        """The handshake ends here: count it, stop the deadline, free the handshake slot."""
        self.counted = True
        self.pending = b""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.listener.handshaking -= 1
        self.listener.count(outcome)

    def _timeout(self) -> None:
        if not self.counted and not self.handed_over:
            self._end(HandshakeOutcome.TIMEOUT)  # nothing, or half a hello, within the deadline
            self.transport.close()

    def eof_received(self) -> bool:
        if not self.counted and not self.handed_over:
            self._end(HandshakeOutcome.RESET)  # gone before its hello was all here
        return False  # the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handed_over:
            return
        if not self.counted:
            self._end(HandshakeOutcome.RESET)
        elif self.timer is not None:  # the lingering close of a 400
            self.timer.cancel()
            self.timer = None


class TlsConnection(Connection):
    """A client connection over TLS: `Connection` with a writer that goes through the transport."""

    def __init__(self, server: ServerState, listener: TlsListener) -> None:
        super().__init__(server)
        self.listener = listener
        self.paused = False  # the transport asked us to stop writing (flow control)

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if not self.closed:
            transport.set_write_buffer_limits(HIGH_WATER, LOW_WATER)

    def eof_received(self) -> None:
        # TLS has no half-close (close_notify ends both ways): finish what was asked, then close.
        super().eof_received()

    def _fast(self, parser: Any) -> bool:
        """The plain hot path's verdict (`_fast_verdict`), sent through TLS: the head and the first
        bytes of the body in one buffer, each further `CHUNK` read straight into it, one transport
        write per buffer. A 16 KiB range is one `preadv` and one write. If the transport asks to
        pause (or a read fails), the general writer takes over where this stopped."""
        verdict = self._fast_verdict(parser)
        if verdict is None:
            return False
        of, offset, left, status, head, now = verdict
        t0 = time.perf_counter()
        view = self.listener.view
        fill = len(head)
        if self.paused or fill >= CHUNK:  # the transport is full already: the general writer waits
            self._fast_takeover(of, head, offset, left, 0, status, t0)
            return True
        view[:fill] = head
        transport = self.transport
        done = 0
        while True:
            try:
                got = os.preadv(of.fd, [view[fill:fill + min(left, CHUNK - fill)]], offset)
            except OSError:
                got = 0
            if got <= 0:  # a failed or short read: the general writer meets it again and fails the disk
                self._fast_takeover(of, head if done == 0 else b"", offset, left, done, status, t0)
                return True
            transport.write(view[:fill + got])
            fill = 0
            offset += got
            left -= got
            done += got
            if left == 0:
                self._fast_served(of, status, done, now, t0)
                return True
            if self.paused or transport.is_closing():
                self._fast_takeover(of, b"", offset, left, done, status, t0)
                return True

    # ---- writing ----------------------------------------------------------------------------
    def _pump(self) -> None:
        """Copy heads and `preadv` file parts into the worker's buffer, hand it to the transport
        (which encrypts it at once), until the response is out or the transport says pause."""
        out = self.out
        transport = self.transport
        view = self.listener.view
        cap = len(view)
        while out and not self.paused:
            if self.closed or transport.is_closing():
                return
            fill = 0
            while out and fill < cap:
                item = out[0]
                if type(item) is bytes:
                    n = len(item)
                    if n > cap - fill:
                        if fill:
                            break  # this buffer first
                        transport.write(item)  # one large piece (a long error body): as it is
                        out.popleft()
                        continue
                    view[fill:fill + n] = item
                    fill += n
                    out.popleft()
                    continue
                n = min(item.count, cap - fill)
                try:
                    got = os.preadv(item.of.fd, [view[fill:fill + n]], item.offset)
                except OSError as exc:
                    self._on_file_error(item.of, exc)
                    return
                if got == 0:
                    self._on_file_error(item.of, OSError(errno.EIO, "file shorter than its index entry"))
                    return
                fill += got
                item.offset += got
                item.count -= got
                self.body_bytes += got
                if item.count == 0:
                    out.popleft()
            if fill:
                transport.write(view[:fill])
        if out:  # paused: wait for resume_writing, at most send_timeout_s
            self.writing = True
            self.deadline = self.server.clock + self.config.send_timeout_s
            return
        self._finish()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.writing:
            self.writing = False
            self.deadline = NEVER
            if not self.closed:
                self._pump()

    def _stop_writer(self) -> None:
        self.writing = False  # no dup, no writer callback: the transport does the waiting
