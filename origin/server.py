"""`origin serve`: the embedded HTTP origin over the local-directory backend.

Appliances fill from it with ranged GETs, exactly as they would from S3: `GET /<file key>` with a
Range header, authenticated by a fill token (contracts.token, scope "fill") in
`Authorization: CDN-Token <query>` or the query string. The catalog is served as JSON for playback:
`/v1/titles[?q=&genre=]`, `/v1/titles/{id}`. `/healthz` and `/metrics` (Prometheus text) need no
token. Range decisions come from origin.core.ranges; bodies are read off the event loop in chunks.
SIGTERM stops accepting, lets in-flight responses finish (up to drain_timeout_s), then exits;
under systemd (Type=notify) it reports READY and STOPPING.
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from email.utils import formatdate
from pathlib import Path
from typing import Callable

from contracts.systemd import sd_notify
from aiohttp import web

from contracts.keys import load_keyring
from contracts.token import Keyring, Scope, TokenError, parse_query, verify
from origin.backends.local import LocalDirBackend
from origin.catalog import Catalog
from origin.config import OriginConfig
from origin.core import catalog as core_catalog
from origin.core.assemble import content_type
from origin.core.errors import OriginError
from origin.core.ranges import Ignore, Satisfiable, Unsatisfiable, if_range_allows, parse_range

AUTH_SCHEME = "CDN-Token"


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


CONFIG = web.AppKey("config", OriginConfig)
BACKEND = web.AppKey("backend", LocalDirBackend)
CATALOG = web.AppKey("catalog", Catalog)
KEYRING = web.AppKey("keyring", Keyring)
METRICS = web.AppKey("metrics", Metrics)
CLOCK = web.AppKey("clock", Callable[[], float])


def _deny(request: web.Request, route: str) -> web.Response | None:
    """None when the request carries a valid fill token; else the 403 to send."""
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    query = credentials.strip() if scheme == AUTH_SCHEME else request.query_string
    try:
        verify("*", parse_query(query), request.app[KEYRING], request.app[CLOCK](), request.remote, Scope.FILL)
    except TokenError as exc:
        request.app[METRICS].refusals[exc.reason] += 1
        request.app[METRICS].responses[(route, exc.status_hint)] += 1
        return web.Response(status=exc.status_hint, text=f"{exc.reason}\n", headers={"X-Deny-Reason": exc.reason})
    return None


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[METRICS].render(), content_type="text/plain", charset="utf-8")


async def titles(request: web.Request) -> web.Response:
    if not request.app[CONFIG].serve.catalog_public and (denied := _deny(request, "catalog")):
        return denied
    catalog = request.app[CATALOG]
    entries = await asyncio.to_thread(catalog.search, request.query.get("q") or None,
                                      request.query.get("genre") or None)
    request.app[METRICS].responses[("catalog", 200)] += 1
    return web.json_response({"titles": [core_catalog.summary(e) for e in entries]})


async def title(request: web.Request) -> web.Response:
    if not request.app[CONFIG].serve.catalog_public and (denied := _deny(request, "catalog")):
        return denied
    try:
        entry = await asyncio.to_thread(request.app[CATALOG].get, request.match_info["title_id"])
    except OriginError as exc:
        request.app[METRICS].responses[("catalog", exc.status_hint)] += 1
        return web.json_response({"error": str(exc)}, status=exc.status_hint)
    request.app[METRICS].responses[("catalog", 200)] += 1
    return web.json_response(core_catalog.to_dict(entry))


async def fetch(request: web.Request) -> web.StreamResponse:
    if denied := _deny(request, "file"):
        return denied
    app = request.app
    try:
        path = app[BACKEND].path_of(request.match_info["key"])
        fh = await asyncio.to_thread(open, path, "rb")
    except (OriginError, FileNotFoundError, IsADirectoryError, NotADirectoryError):
        app[METRICS].responses[("file", 404)] += 1
        return web.Response(status=404, text="not found\n")
    try:
        return await _send(request, fh, path)
    finally:
        await asyncio.to_thread(fh.close)


async def _send(request: web.Request, fh, path: Path) -> web.StreamResponse:
    app = request.app
    st = os.fstat(fh.fileno())
    size, mtime = st.st_size, int(st.st_mtime)
    etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
    headers = {"Accept-Ranges": "bytes", "ETag": etag, "Last-Modified": formatdate(mtime, usegmt=True),
               "Cache-Control": app[CONFIG].serve.cache_control, "Content-Type": content_type(path.name)}
    verdict = parse_range(request.headers.get("Range"), size)
    if not isinstance(verdict, Ignore) and not if_range_allows(request.headers.get("If-Range"), etag, mtime):
        verdict = Ignore("If-Range validator changed")
    if isinstance(verdict, Unsatisfiable):
        app[METRICS].responses[("file", 416)] += 1
        return web.Response(status=416, headers={**headers, "Content-Range": verdict.content_range()})
    start, length, status = 0, size, 200
    if isinstance(verdict, Satisfiable):
        start, length, status = verdict.start, verdict.length, 206
        headers["Content-Range"] = verdict.content_range(size)
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = length
    app[METRICS].responses[("file", status)] += 1
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    await _copy(fh, start, length, response, app[CONFIG].serve.chunk_bytes, app[METRICS])
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


def make_app(cfg: OriginConfig, keyring: Keyring, clock: Callable[[], float] = time.time) -> web.Application:
    if cfg.location is None or cfg.location.is_s3 or cfg.location.path is None:
        raise OriginError("origin serve needs a local-directory origin (appliances fetch S3 directly)")
    backend = LocalDirBackend(cfg.location.path)
    app = web.Application()
    app[CONFIG], app[BACKEND], app[CATALOG], app[KEYRING] = cfg, backend, Catalog(backend), keyring
    app[METRICS], app[CLOCK] = Metrics(), clock
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/titles", titles)
    app.router.add_get("/v1/titles/{title_id}", title)
    app.router.add_get("/{key:.+}", fetch)  # add_get also answers HEAD
    return app


async def _serve(cfg: OriginConfig, keyring: Keyring, announce: Callable[[str], None]) -> None:
    runner = web.AppRunner(make_app(cfg, keyring), shutdown_timeout=cfg.serve.drain_timeout_s,
                           handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, cfg.serve.listen, cfg.serve.port)
    await site.start()
    host, port = runner.addresses[0][:2]  # the real port when the config says 0
    announce(f"serving {cfg.location} on http://{host}:{port}")
    sd_notify("READY=1")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    announce("draining")
    sd_notify("STOPPING=1")
    await runner.cleanup()  # stops listening, waits for in-flight requests up to shutdown_timeout


def serve(cfg: OriginConfig, announce: Callable[[str], None] = print) -> None:
    if cfg.serve.key_file is None:
        raise OriginError("serve.key_file: required (the fill-token keys appliances sign with)")
    keyring = load_keyring(cfg.serve.key_file)
    make_app(cfg, keyring)  # refuse a bad origin before binding
    asyncio.run(_serve(cfg, keyring, announce))
