"""`origin serve`: the embedded HTTP origin over the local-directory backend.

Appliances fill from it with ranged GETs, exactly as they would from S3: `GET /<file key>` with a
Range header, authenticated by a fill token (contracts.token, scope "fill") in
`Authorization: CDN-Token <query>` or the query string. The catalog is served as JSON for playback:
`/v1/titles[?q=&genre=]`, `/v1/titles/{id}`. `/healthz` and `/metrics` (prometheus-client, one
registry for the service) need no token. Range decisions are the appliance's (contracts.ranges: one
range, several as multipart/byteranges, If-Range, answers as nginx gives them); bodies go from the file
to the socket with sendfile (origin.filebody; `serve.sendfile = false` copies them off the loop).
With `[tls]` it serves HTTPS instead (contracts.tlsserve: TLS 1.2+/AEAD, a handshake timeout, the
certificate re-read on SIGHUP without dropping a connection), so fill tokens and bodies do not cross
the network in clear text. SIGTERM stops accepting, lets in-flight responses finish (up to drain_timeout_s), then exits;
under systemd (Type=notify) it reports READY and STOPPING. Connections are guarded (contracts.webguard):
header and idle timeouts and a connection cap; a request body is never read (a response to a request
that carried one closes the connection).

Withdrawn titles (contracts.withdrawals): with `serve.control_store` set, the `withdrawals` task reads
the withdrawal log there every `withdrawals_poll_s` (origin.withdrawals), and a file of a withdrawn
title or version is answered 410, as is its catalog entry (and it leaves the title list), so an
appliance with a stale manifest or a pull-through miss cannot bring it back. A store that cannot be
read keeps the last good state (the task raises to its supervisor: logged, counted, degraded).

SIGHUP (`systemctl reload`) re-reads the config: what handlers use (config, backend, catalog, keys)
is one `Serving` snapshot, built in a thread and swapped in with one assignment; a request reads the
snapshot once, so requests in flight finish with the one they started with and none is dropped. A
config that cannot be read keeps the running snapshot; the `reload` task raises, and its supervisor
logs why (with the traceback) and counts it. /healthz stays 200 while degraded (still serving).
"""
from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import time
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import AsyncIterator, BinaryIO, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from contracts import catalog as catalog_schema
from contracts.catalog import CatalogError
from contracts.keys import load_keyring
from contracts.logs import log_event
from contracts.ranges import decide
from contracts.supervise import TaskSupervisor
from contracts.systemd import sd_notify
from contracts.tlsserve import ServerTls, site as tls_site
from contracts.token import Keyring, Scope, TokenError, parse_query, verify
from contracts.webguard import GUARD, Guard, GuardedRunner
from contracts.withdrawals import EMPTY, Withdrawals
from origin.backends.local import LocalDirBackend
from origin.catalog import Catalog
from origin.config import OriginConfig
from origin.core.assemble import content_type
from origin.core.errors import OriginError
from origin.filebody import Sending, body_for, send
from origin.withdrawals import LogReader

AUTH_SCHEME = "CDN-Token"
log = logging.getLogger("origin")


class OriginMetrics:
    """The origin's series, in the service's one registry (the task supervisor's join it)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.responses = Counter("origin_responses", "Responses by route (file, catalog) and status.",
                                 ["route", "status"], registry=self.registry)
        self.refusals = Counter("origin_token_refusals", "Requests refused for their token, by reason.",
                                ["reason"], registry=self.registry)
        self.bytes_sent = Counter("origin_bytes_sent", "File body bytes sent.", registry=self.registry)
        self.in_flight = Gauge("origin_requests_in_flight", "File bodies being sent now.", registry=self.registry)
        self.aborted = Counter("origin_bodies_aborted", "File bodies cut short (connection aborted), by reason.",
                               ["reason"], registry=self.registry)

    def responded(self, route: str, status: int) -> None:
        self.responses.labels(route, str(status)).inc()


@dataclass(frozen=True)
class Serving:
    """Everything a request reads, built together and replaced together."""

    config: OriginConfig
    backend: LocalDirBackend
    catalog: Catalog
    keyring: Keyring


def open_serving(cfg: OriginConfig, keyring: Keyring | None = None, previous: Serving | None = None) -> Serving:
    """Check the config and open what it names (blocking: reads the key file). The catalog (and its
    ETag cache) is kept when the location did not change."""
    if cfg.location is None or cfg.location.is_s3 or cfg.location.path is None:
        raise OriginError("origin serve needs a local-directory origin (appliances fetch S3 directly)")
    if keyring is None:
        if cfg.serve.key_file is None:
            raise OriginError("serve.key_file: required (the fill-token keys appliances sign with)")
        keyring = load_keyring(cfg.serve.key_file)
    if previous is not None and previous.config.location == cfg.location:
        return Serving(cfg, previous.backend, previous.catalog, keyring)
    backend = LocalDirBackend(cfg.location.path)
    return Serving(cfg, backend, Catalog(backend), keyring)


ReadConfig = Callable[[], OriginConfig]


class OriginState:
    """The app's state: the current snapshot (swapped by reloads) and how to read the config again,
    metrics, clock, supervised tasks."""

    def __init__(self, serving: Serving, read_config: ReadConfig, clock: Callable[[], float]) -> None:
        self.current = serving
        self.read_config = read_config
        self.metrics = OriginMetrics()
        self.clock = clock
        self.tasks = TaskSupervisor("origin", logging.getLogger("origin.tasks"), registry=self.metrics.registry)
        self.reload_requested = asyncio.Event()  # set by SIGHUP, consumed by the `reload` task
        self.withdrawn: Withdrawals = EMPTY  # what the control store's log withdraws (the `withdrawals` task)


STATE = web.AppKey("state", OriginState)


def _deny(request: web.Request, route: str, keyring: Keyring) -> web.Response | None:
    """None when the request carries a valid fill token; else the 403 to send."""
    state = request.app[STATE]
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    query = credentials.strip() if scheme == AUTH_SCHEME else request.query_string
    try:
        verify("*", parse_query(query), keyring, state.clock(), request.remote, Scope.FILL)
    except TokenError as exc:
        state.metrics.refusals.labels(exc.reason).inc()
        state.metrics.responded(route, exc.status_hint)
        return web.Response(status=exc.status_hint, text=f"{exc.reason}\n", headers={"X-Deny-Reason": exc.reason})
    return None


async def healthz(request: web.Request) -> web.Response:
    """`ok`, or `degraded (task, ...)`: 200 either way, the origin still serves."""
    degraded = request.app[STATE].tasks.degraded()
    return web.Response(text=f"degraded ({', '.join(degraded)})\n" if degraded else "ok\n")


async def metrics(request: web.Request) -> web.Response:
    text = generate_latest(request.app[STATE].metrics.registry).decode() + request.app[GUARD].metrics_text("origin")
    return web.Response(text=text, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


def _catalog_denied(request: web.Request, serving: Serving) -> web.Response | None:
    if serving.config.serve.catalog_public:
        return None
    return _deny(request, "catalog", serving.keyring)


async def titles(request: web.Request) -> web.Response:
    serving = request.app[STATE].current
    if denied := _catalog_denied(request, serving):
        return denied
    entries = await asyncio.to_thread(serving.catalog.search, request.query.get("q") or None,
                                      request.query.get("genre") or None)
    withdrawn = request.app[STATE].withdrawn
    request.app[STATE].metrics.responded("catalog", 200)
    return web.json_response({"titles": [catalog_schema.summary(e) for e in entries
                                         if withdrawn.find(e.title_id, e.version) is None]})


async def title(request: web.Request) -> web.Response:
    serving, m = request.app[STATE].current, request.app[STATE].metrics
    if denied := _catalog_denied(request, serving):
        return denied
    try:
        entry = await asyncio.to_thread(serving.catalog.get, request.match_info["title_id"])
    except (OriginError, CatalogError) as exc:  # a bad id (400), no such title (404), a broken entry
        m.responded("catalog", exc.status_hint)
        return web.json_response({"error": str(exc)}, status=exc.status_hint)
    if event := request.app[STATE].withdrawn.find(entry.title_id, entry.version):
        m.responded("catalog", 410)
        return web.json_response({"error": f"{event.target}: withdrawn ({event.reason})"}, status=410)
    m.responded("catalog", 200)
    return web.json_response(catalog_schema.to_dict(entry))


async def fetch(request: web.Request) -> web.StreamResponse:
    serving, m = request.app[STATE].current, request.app[STATE].metrics  # one snapshot for the whole response
    if denied := _deny(request, "file", serving.keyring):
        return denied
    if request.app[STATE].withdrawn.covers(request.match_info["key"]) is not None:
        m.responded("file", 410)
        return web.Response(status=410, text="withdrawn\n")
    try:
        path = serving.backend.path_of(request.match_info["key"])
        fh = await asyncio.to_thread(open, path, "rb")
    except (OriginError, FileNotFoundError, IsADirectoryError, NotADirectoryError):
        m.responded("file", 404)
        return web.Response(status=404, text="not found\n")
    try:
        return await _send(request, serving.config, m, fh, path)
    finally:
        await asyncio.to_thread(fh.close)


async def _send(request: web.Request, cfg: OriginConfig, m: OriginMetrics, fh: BinaryIO,
                path: Path) -> web.StreamResponse:
    st = os.fstat(fh.fileno())
    size, mtime = st.st_size, int(st.st_mtime)
    etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
    verdict = decide(request.headers.get("Range"), request.headers.get("If-Range"), size, etag, mtime)
    body = body_for(verdict, size, content_type(path.name), secrets.token_hex(8))
    response = web.StreamResponse(status=body.status, headers={
        "Accept-Ranges": "bytes", "ETag": etag, "Last-Modified": formatdate(mtime, usegmt=True),
        "Cache-Control": cfg.serve.cache_control, **body.headers})
    response.content_length = body.length
    m.responded("file", body.status)
    await response.prepare(request)
    if request.method == "HEAD" or not body.pieces:
        return response
    how = Sending(cfg.serve.sendfile, cfg.serve.chunk_bytes, cfg.serve.guard.send_timeout_s)
    with m.in_flight.track_inprogress():
        aborted = await send(request, response, fh, body.pieces, how, m.bytes_sent.inc)
    if aborted is None:
        await response.write_eof()
        return response
    m.aborted.labels(aborted).inc()
    if aborted == "stalled":
        request.app[GUARD].send_timeouts_total += 1  # the guard's own count: a client not reading its response
    if aborted == "file-shrank":
        log_event(log, "file-shrank", logging.WARNING, key=request.match_info["key"], size=size)
    return response  # the connection is aborted: aiohttp's write_eof fails quietly (a ConnectionError)


def make_app(serving: Serving, read_config: ReadConfig | None = None,
             clock: Callable[[], float] = time.time) -> web.Application:
    """`read_config` reads the config again on SIGHUP (the CLI re-applies its overrides); without
    one, a reload re-opens the running config's files (the key file: key rotation)."""
    app = web.Application(client_max_size=64 << 10)  # no route reads a body
    app[STATE] = OriginState(serving, read_config or (lambda: serving.config), clock)
    Guard(lambda: app[STATE].current.config.serve.guard).install(app)
    app.cleanup_ctx.append(_background)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/titles", titles)
    app.router.add_get("/v1/titles/{title_id}", title)
    app.router.add_get("/{key:.+}", fetch)  # add_get also answers HEAD
    return app


# ---- background life: reloads ---------------------------------------------------------------------

class ReloadFailed(Exception):
    """The new config could not be read or opened; the running snapshot keeps serving."""


async def _background(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    state.tasks.spawn("reload", lambda: _reloads(state))
    state.tasks.spawn("withdrawals", lambda: _withdrawals(state))
    yield
    await state.tasks.shutdown()


async def _reloads(state: OriginState) -> None:
    """The `reload` task: one reload per SIGHUP; a failure raises to the supervisor, the next SIGHUP
    (after the restart backoff) retries."""
    while True:
        await state.reload_requested.wait()
        state.reload_requested.clear()
        await reload(state)
        state.tasks.succeeded("reload")


async def _withdrawals(state: OriginState) -> None:
    """The `withdrawals` task: read what is new in the control store's log, then wait a poll. Idle while
    no control store is set; a new store (a reload) is read from scratch."""
    reader, where, backend = LogReader(), None, None
    while True:
        serve = state.current.config.serve
        if serve.control_store is None:
            state.withdrawn, where = EMPTY, None
        else:
            if (serve.control_store, serve.control_store_endpoint_url) != where:
                from origin.backends import open_backend
                from origin.config import S3Config, parse_location

                where = (serve.control_store, serve.control_store_endpoint_url)
                location = parse_location(where[0], endpoint_url=where[1], where="serve.control_store")
                backend, reader = open_backend(location, S3Config(max_attempts=3)), LogReader()
            fresh, rejected = await asyncio.to_thread(reader.read_new, backend)
            for key, why in rejected.items():
                log_event(log, "withdrawal-event-rejected", logging.WARNING, key=key, error=why)
            if fresh or state.withdrawn is EMPTY:
                before, state.withdrawn = state.withdrawn, reader.withdrawals()
                if set(before.active) != set(state.withdrawn.active):
                    log_event(log, "withdrawals", withdrawn=sorted(e.target for e in state.withdrawn.active.values()))
            state.tasks.succeeded("withdrawals")
        await asyncio.sleep(serve.withdrawals_poll_s)


async def reload(state: OriginState) -> None:
    """Read and open the new config in a thread, then swap the snapshot in one assignment."""
    running = state.current
    try:
        cfg = await asyncio.to_thread(state.read_config)
        serving = await asyncio.to_thread(open_serving, cfg, None, running)
    except (ValueError, OSError, OriginError) as exc:  # ConfigError is a ValueError
        raise ReloadFailed(f"keeping the running config: {exc}") from exc
    old, new = running.config.serve, cfg.serve
    if (old.listen, old.port, old.drain_timeout_s, running.config.tls) != (new.listen, new.port, new.drain_timeout_s,
                                                                          cfg.tls):
        tls = running.config.tls
        log_event(log, "restart-needed", logging.WARNING, keeps={
            "listen": old.listen, "port": old.port, "drain_timeout_s": old.drain_timeout_s,
            "tls": None if tls is None else {"cert_file": str(tls.cert_file), "key_file": str(tls.key_file)}})
    state.current = serving
    log_event(log, "reloaded", location=str(cfg.location), key_ids=sorted(serving.keyring.keys),
              catalog_public=new.catalog_public)


async def _serve(serving: Serving, read_config: ReadConfig | None, tls: ServerTls | None) -> None:
    cfg = serving.config
    app = make_app(serving, read_config)
    runner = GuardedRunner(app, app[GUARD], shutdown_timeout=cfg.serve.drain_timeout_s, handle_signals=False,
                           access_log=None)
    await runner.setup()
    await tls_site(runner, cfg.serve.listen, cfg.serve.port, tls).start()  # backlog 1024: a burst waits, not drops
    if tls is not None:
        tasks = app[STATE].tasks
        tasks.spawn("tls-reload", lambda: tls.reloads(lambda: tasks.succeeded("tls-reload")))
    host, port = runner.addresses[0][:2]  # the real port when the config says 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: (app[STATE].reload_requested.set(), tls and tls.requested.set()))
    log_event(log, "listening", url=f"{'https' if tls else 'http'}://{host}:{port}", port=port, tls=tls is not None,
              location=str(cfg.location))
    sd_notify("READY=1")
    await stop.wait()
    log_event(log, "draining", timeout_s=cfg.serve.drain_timeout_s)
    sd_notify("STOPPING=1")
    await runner.cleanup()  # stops listening, waits for in-flight requests up to shutdown_timeout
    log_event(log, "stopped")


def serve(cfg: OriginConfig, read_config: ReadConfig | None = None) -> None:
    """Serve until SIGTERM, reload on SIGHUP (see make_app). Refuses a bad origin or key file before
    binding."""
    serving = open_serving(cfg)
    asyncio.run(_serve(serving, read_config, ServerTls(cfg.tls) if cfg.tls is not None else None))
