"""HTTPS for the aiohttp services (steering, playback): their `[tls]` table, the listener's SSL context,
and the certificate reloaded on SIGHUP. (The appliance has its own, with several certificates chosen by
SNI: oca.tlsconf.)

    [tls]                                         # absent: plain HTTP; present: HTTPS on listen:port instead
    cert_file = "/etc/opencdn/tls/steering.pem"   # the leaf, then its intermediates (a chain file)
    key_file = "/etc/opencdn/tls/steering.key"
    handshake_timeout_s = 10.0                    # a handshake not done by then is dropped; default 10

Strategy. The listening socket keeps one context for the life of the process: TLS 1.2 and 1.3, TLS 1.2
limited to ECDHE with AEAD ciphers, no renegotiation, no compression, ALPN `http/1.1`. A reload (SIGHUP)
builds a whole new context from the files in a thread — a bad or mismatched pair is logged and the
running certificate kept, never half-replaced — and the listening context's SNI callback, which OpenSSL
calls for every ClientHello (with or without a server name), hands each new handshake the newest one.
Connections already open keep the context they were accepted with, so a reload drops none. aiohttp's
TCPSite offers no handshake timeout (asyncio's default is 60 s, and the connection guard of
contracts.webguard only sees a connection once its handshake is done), so `TlsSite` passes one.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
import time
from pathlib import Path
from typing import Annotated, Any, Callable

from aiohttp import web
from msgspec import Meta

from contracts.logs import log_event
from contracts.structconf import Conf, ConfigError

__all__ = ["TlsSettings", "ServerTls", "TlsSite", "server_context", "describe", "site"]

log = logging.getLogger("tls")
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"  # TLS 1.2 suites (TLS 1.3's are all AEAD)


class TlsSettings(Conf):
    """The `[tls]` table: a service's file declares `tls: TlsSettings | None = None` (contracts.structconf
    takes relative paths against the config's folder)."""

    cert_file: Path
    key_file: Path
    handshake_timeout_s: Annotated[float, Meta(ge=0.1, le=300)] = 10.0


def server_context(cfg: TlsSettings) -> ssl.SSLContext:
    """A server context holding the certificate chain and key; ConfigError names the file at fault."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(CIPHERS)
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(["http/1.1"])
    for key, path, marker in (("tls.cert_file", cfg.cert_file, b"-----BEGIN CERTIFICATE-----"),
                              ("tls.key_file", cfg.key_file, b"PRIVATE KEY-----")):
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{key}: {path}: {exc.strerror}") from None
        if marker not in pem:
            raise ConfigError(f"{key}: {path} holds no PEM {'certificate' if key == 'tls.cert_file' else 'key'}")
    try:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"tls.key_file: {cfg.key_file} is not the key of {cfg.cert_file}") from None
        raise ConfigError(f"tls.cert_file: cannot load {cfg.cert_file} with tls.key_file {cfg.key_file}: "
                          f"{exc.reason or exc}") from None
    except OSError as exc:  # replaced in between
        raise ConfigError(f"tls.cert_file: {cfg.cert_file} or tls.key_file {cfg.key_file}: {exc.strerror}") from None
    return ctx


def describe(cfg: TlsSettings) -> str:
    """check-config's line: the pair loads (else ConfigError), the certificate's names and end."""
    server_context(cfg)
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)  # as oca.tlsconf reads a leaf
    facts = ""
    if decode is not None:
        leaf = decode(str(cfg.cert_file))
        names = [v for _, v in leaf.get("subjectAltName", ())]
        ends = ssl.cert_time_to_seconds(leaf["notAfter"])
        facts = (f"; names {', '.join(names) or '(none)'}; ends {leaf['notAfter']}"
                 + (" (EXPIRED)" if ends < time.time() else ""))
    return f"https: {cfg.cert_file} with {cfg.key_file}{facts}"


class ServerTls:
    """The listening context and the newest one it hands new handshakes (see the module's strategy)."""

    def __init__(self, cfg: TlsSettings) -> None:
        self.cfg = cfg
        self.context = server_context(cfg)  # the listener's, for the life of the process
        self.current = self.context  # the newest good one: new handshakes get it
        self.context.sni_callback = self._newest
        self.requested = asyncio.Event()  # set by SIGHUP, consumed by the service's `tls-reload` task

    def _newest(self, sslobj: Any, server_name: str | None, ctx: ssl.SSLContext) -> None:
        if self.current is not ctx:
            sslobj.context = self.current

    def request_reload(self) -> None:
        """SIGHUP: ask the `tls-reload` task to re-read the files."""
        self.requested.set()

    async def reloads(self, succeeded: Callable[[], None]) -> None:
        """The service's `tls-reload` task (run under its TaskSupervisor): one reload per request, the
        files read in a thread. A bad or mismatched pair keeps the running certificate and raises, so
        the supervisor logs it with its traceback, counts it and degrades /healthz until a good one."""
        while True:
            await self.requested.wait()
            self.requested.clear()
            try:
                fresh = await asyncio.to_thread(server_context, self.cfg)
            except ConfigError as exc:
                log_event(log, "tls-reload-failed", logging.ERROR, error=str(exc), keeping="the running certificate")
                raise
            self.current = fresh
            log_event(log, "tls-reloaded", cert_file=str(self.cfg.cert_file))
            succeeded()


class TlsSite(web.TCPSite):
    """aiohttp's TCPSite with a handshake timeout (its `start` without one, otherwise the same)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, tls: ServerTls, backlog: int) -> None:
        super().__init__(runner, host, port, ssl_context=tls.context, backlog=backlog)
        self.handshake_timeout_s = tls.cfg.handshake_timeout_s

    async def start(self) -> None:
        await web.BaseSite.start(self)
        assert self._runner.server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self._runner.server, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            ssl_handshake_timeout=self.handshake_timeout_s)
        self._bound_port = self._server.sockets[0].getsockname()[1]


def site(runner: web.BaseRunner, host: str, port: int, tls: ServerTls | None, backlog: int = 1024) -> web.TCPSite:
    """The service's listener: HTTPS with `tls`, else plain HTTP."""
    if tls is None:
        return web.TCPSite(runner, host, port, backlog=backlog)
    return TlsSite(runner, host, port, tls, backlog)
