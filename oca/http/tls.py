"""HTTPS on the appliance: the same protocol and verdicts as plain HTTP, over uvloop's TLS transport.

Strategy. Each worker listens on the TLS port (SO_REUSEPORT, like the plain one). A new TCP
connection is wrapped at once in uvloop's SSL protocol with the current contexts (oca/tlsconf.py: one per
certificate, chosen by SNI) and a handshake deadline; whatever ends the handshake early — an
http:// request sent here, a stall, an unknown server name, a reset — closes the connection and
is counted by outcome (oca.core.tls.classify_failure). A finished handshake gets a
`TlsConnection`: the plain `Connection` (parsing, decisions, responses, timeouts) with another
writing half. Without kernel TLS, sendfile cannot carry bodies: the writer fills one buffer per
worker — response heads copied in, file bytes `preadv`ed straight into it from the descriptor kept
open (no per-request open) — and hands up to `CHUNK` bytes at a time to the transport, which
encrypts them synchronously into its outgoing buffer (so the buffer is free again when `write`
returns). Flow control is the transport's: `pause_writing` stops the pump, `resume_writing`
continues it, and the send timeout runs while paused.

Certificates are reloaded (SIGHUP, or a changed file seen every `reload_check_s`) by building new
contexts; connections keep the context they were accepted with, so none is dropped. A bad file
keeps the last good contexts.
"""
from __future__ import annotations

import asyncio
import errno
import os
import socket
from typing import Any

from contracts.tomlconf import ConfigError
from oca.core.tls import HandshakeOutcome, classify_failure
from oca.http.protocol import Connection
from oca.http.state import ServerState
from oca.http.writer import NEVER
from oca.tlsconf import Contexts, TlsConfig

try:  # the SSL protocol uvloop's own TLS servers use (asyncio's has the same signature)
    from uvloop.loop import SSLProtocol as _SSLProtocol
except ImportError:  # pragma: no cover
    from asyncio.sslproto import SSLProtocol as _SSLProtocol

CHUNK = 256 * 1024  # bytes handed to the TLS transport per write (16 records of 16 KiB)
HIGH_WATER = 512 * 1024  # encrypted bytes queued per connection before the pump pauses
LOW_WATER = 128 * 1024


class TlsListener:
    """One worker's TLS side: its contexts, its body buffer, the handshakes in progress."""

    def __init__(self, config: TlsConfig, state: ServerState) -> None:
        self.config = config
        self.state = state
        self.contexts = Contexts(config)  # ConfigError at start-up: the worker fails
        self.buffer = bytearray(CHUNK)  # shared by every connection: each write consumes it at once
        self.view = memoryview(self.buffer)
        self.handshaking = 0

    async def serve(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> asyncio.AbstractServer:
        return await loop.create_server(lambda: _Handshake(self), sock=sock, backlog=4096)

    def count(self, outcome: HandshakeOutcome) -> None:
        self.state.metrics.add("tls_" + outcome.value)

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

    # ---- one handshake --------------------------------------------------------------------
    def wrap(self, transport: Any) -> None:
        """Put TLS between the TCP transport and a new `TlsConnection`, at once (before any byte is
        read: uvloop starts reading right after `connection_made`, and `loop.start_tls` would only
        take over on the next turn of the loop, after the ClientHello went to the wrong protocol).
        The SSL protocol calls the connection's `connection_made` when the handshake succeeds; the
        waiter tells us either way."""
        state = self.state
        if state.draining or len(state.connections) + self.handshaking >= state.config.max_connections:
            transport.abort()
            return
        waiter = state.loop.create_future()
        tls = _SSLProtocol(state.loop, TlsConnection(state, self), self.contexts.default, waiter, server_side=True,
                           server_hostname=None, ssl_handshake_timeout=self.config.handshake_timeout_s)
        transport.set_protocol(tls)
        tls.connection_made(transport)
        self.handshaking += 1
        waiter.add_done_callback(lambda done: self._handshake_done(transport, done))

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


class _Handshake(asyncio.Protocol):
    """The TCP connection's first protocol, replaced by TLS in `connection_made`."""

    def __init__(self, listener: TlsListener) -> None:
        self.listener = listener

    def connection_made(self, transport: Any) -> None:
        self.listener.wrap(transport)

    def data_received(self, data: bytes) -> None:  # pragma: no cover - replaced before any read
        pass


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
        return False  # sendfile's one-call path; the general path answers through _pump below

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
