"""`origin serve`: the embedded HTTP origin over the local-directory backend.

Appliances fill from it with ranged GETs, exactly as they would from S3: `GET /<file key>` with a
Range header, authenticated by a fill token (contracts.token, scope "fill") in
`Authorization: CDN-Token <query>` or the query string. The catalog is served as JSON for playback:
`/v1/titles[?q=&genre=]`, `/v1/titles/{id}`. `/healthz` and `/metrics` (Prometheus text) need no
token. Range decisions come from origin.core.ranges; bodies are read off the event loop in chunks.
SIGTERM stops accepting, lets in-flight responses finish (up to drain_timeout_s), then exits;
under systemd (Type=notify) it reports READY and STOPPING. Connections are guarded (contracts.webguard):
header and idle timeouts and a connection cap; a request body is never read (a response to a request
that carried one closes the connection).

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
import signal
import time
from collections import Counter
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import AsyncIterator, Callable

from aiohttp import web
from prometheus_client import generate_latest

from contracts.keys import load_keyring
from contracts.logs import log_event
from contracts.supervise import TaskSupervisor
from contracts.systemd import sd_notify
from contracts.token import Keyring, Scope, TokenError, parse_query, verify
from contracts.webguard import GUARD, Guard, GuardedRunner
from origin.backends.local import LocalDirBackend
from origin.catalog import Catalog
from origin.config import OriginConfig
from origin.core import catalog as core_catalog
from origin.core.assemble import content_type
from origin.core.errors import OriginError
from origin.core.ranges import Ignore, Satisfiable, Unsatisfiable, if_range_allows, parse_range

AUTH_SCHEME = "CDN-Token"
log = logging.getLogger("origin")


class Metrics:
    def __init__(self) -> None:
        self.responses: Counter[tuple[str, int]] = Counter()  # (route, status)
        self.refusals: Counter[str] = Counter()  # token refusal reason
        self.bytes_sent = 0
        self.in_flight = 0

    def render(self) -> str:
        lines = ["# TYPE origin_responses_total counter"]
        lines += [f'origin_responses_total{{route="{r}",status="{s}"}} {n}'
                  for (r, s), n in sorted(self.responses.items())]
        lines += ["# TYPE origin_token_refusals_total counter"]
        lines += [f'origin_token_refusals_total{{reason="{r}"}} {n}' for r, n in sorted(self.refusals.items())]
        lines += ["# TYPE origin_bytes_sent_total counter", f"origin_bytes_sent_total {self.bytes_sent}",
                  "# TYPE origin_requests_in_flight gauge", f"origin_requests_in_flight {self.in_flight}"]
        return "\n".join(lines) + "\n"


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
        self.metrics = Metrics()
        self.clock = clock
        self.tasks = TaskSupervisor("origin", logging.getLogger("origin.tasks"))
        self.reload_requested = asyncio.Event()  # set by SIGHUP, consumed by the `reload` task


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
        state.metrics.refusals[exc.reason] += 1
        state.metrics.responses[(route, exc.status_hint)] += 1
        return web.Response(status=exc.status_hint, text=f"{exc.reason}\n", headers={"X-Deny-Reason": exc.reason})
    return None


async def healthz(request: web.Request) -> web.Response:
    """`ok`, or `degraded (task, ...)`: 200 either way, the origin still serves."""
    degraded = request.app[STATE].tasks.degraded()
    return web.Response(text=f"degraded ({', '.join(degraded)})\n" if degraded else "ok\n")


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    text = (state.metrics.render() + generate_latest(state.tasks.registry).decode()
            + request.app[GUARD].metrics_text("origin"))
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


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
    request.app[STATE].metrics.responses[("catalog", 200)] += 1
    return web.json_response({"titles": [core_catalog.summary(e) for e in entries]})


async def title(request: web.Request) -> web.Response:
    serving, m = request.app[STATE].current, request.app[STATE].metrics
    if denied := _catalog_denied(request, serving):
        return denied
    try:
        entry = await asyncio.to_thread(serving.catalog.get, request.match_info["title_id"])
    except OriginError as exc:
        m.responses[("catalog", exc.status_hint)] += 1
        return web.json_response({"error": str(exc)}, status=exc.status_hint)
    m.responses[("catalog", 200)] += 1
    return web.json_response(core_catalog.to_dict(entry))


async def fetch(request: web.Request) -> web.StreamResponse:
    serving, m = request.app[STATE].current, request.app[STATE].metrics  # one snapshot for the whole response
    if denied := _deny(request, "file", serving.keyring):
        return denied
    try:
        path = serving.backend.path_of(request.match_info["key"])
        fh = await asyncio.to_thread(open, path, "rb")
    except (OriginError, FileNotFoundError, IsADirectoryError, NotADirectoryError):
        m.responses[("file", 404)] += 1
        return web.Response(status=404, text="not found\n")
    try:
        return await _send(request, serving.config, m, fh, path)
    finally:
        await asyncio.to_thread(fh.close)


async def _send(request: web.Request, cfg: OriginConfig, m: Metrics, fh, path: Path) -> web.StreamResponse:
    st = os.fstat(fh.fileno())
    size, mtime = st.st_size, int(st.st_mtime)
    etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
    headers = {"Accept-Ranges": "bytes", "ETag": etag, "Last-Modified": formatdate(mtime, usegmt=True),
               "Cache-Control": cfg.serve.cache_control, "Content-Type": content_type(path.name)}
    verdict = parse_range(request.headers.get("Range"), size)
    if not isinstance(verdict, Ignore) and not if_range_allows(request.headers.get("If-Range"), etag, mtime):
        verdict = Ignore("If-Range validator changed")
    if isinstance(verdict, Unsatisfiable):
        m.responses[("file", 416)] += 1
        return web.Response(status=416, headers={**headers, "Content-Range": verdict.content_range()})
    start, length, status = 0, size, 200
    if isinstance(verdict, Satisfiable):
        start, length, status = verdict.start, verdict.length, 206
        headers["Content-Range"] = verdict.content_range(size)
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = length
    m.responses[("file", status)] += 1
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    await _copy(fh, start, length, response, cfg.serve.chunk_bytes, m)
    await response.write_eof()
    return response


async def _copy(fh, start: int, length: int, response: web.StreamResponse, chunk: int, m: Metrics) -> None:
    def read(offset: int, n: int) -> bytes:
        return os.pread(fh.fileno(), n, offset)

    offset, end = start, start + length
    m.in_flight += 1
    try:
        while offset < end:
            data = await asyncio.to_thread(read, offset, min(chunk, end - offset))
            if not data:
                raise ConnectionResetError("file shrank while being sent")  # drop: the length is promised
            await response.write(data)
            offset += len(data)
            m.bytes_sent += len(data)
    finally:
        m.in_flight -= 1


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


async def reload(state: OriginState) -> None:
    """Read and open the new config in a thread, then swap the snapshot in one assignment."""
    running = state.current
    try:
        cfg = await asyncio.to_thread(state.read_config)
        serving = await asyncio.to_thread(open_serving, cfg, None, running)
    except (ValueError, OSError, OriginError) as exc:  # ConfigError is a ValueError
        raise ReloadFailed(f"keeping the running config: {exc}") from exc
    old, new = running.config.serve, cfg.serve
    if (old.listen, old.port, old.drain_timeout_s) != (new.listen, new.port, new.drain_timeout_s):
        log_event(log, "restart-needed", logging.WARNING, keeps={"listen": old.listen, "port": old.port,
                                                                  "drain_timeout_s": old.drain_timeout_s})
    state.current = serving
    log_event(log, "reloaded", location=str(cfg.location), key_ids=sorted(serving.keyring.keys),
              catalog_public=new.catalog_public)


async def _serve(serving: Serving, read_config: ReadConfig | None) -> None:
    cfg = serving.config
    app = make_app(serving, read_config)
    runner = GuardedRunner(app, app[GUARD], shutdown_timeout=cfg.serve.drain_timeout_s, handle_signals=False,
                           access_log=None)
    await runner.setup()
    await web.TCPSite(runner, cfg.serve.listen, cfg.serve.port, backlog=1024).start()  # a burst waits, not drops
    host, port = runner.addresses[0][:2]  # the real port when the config says 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, app[STATE].reload_requested.set)
    log_event(log, "listening", url=f"http://{host}:{port}", port=port, location=str(cfg.location))
    sd_notify("READY=1")
    await stop.wait()
    log_event(log, "draining", timeout_s=cfg.serve.drain_timeout_s)
    sd_notify("STOPPING=1")
    await runner.cleanup()  # stops listening, waits for in-flight requests up to shutdown_timeout
    log_event(log, "stopped")


def serve(cfg: OriginConfig, read_config: ReadConfig | None = None) -> None:
    """Serve until SIGTERM, reload on SIGHUP (see make_app). Refuses a bad origin or key file before
    binding."""
    asyncio.run(_serve(open_serving(cfg), read_config))
