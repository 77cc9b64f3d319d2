"""Playback's HTTP shell (aiohttp): catalog API, per-client manifests over steering, the steering
manifest, viewing events and popularity, the web pages; SIGTERM drains, SIGHUP reloads the config.

    GET  /v1/titles[?q=&genre=]  /v1/titles/{id}  /v1/titles/{id}/poster
    GET  /v1/playback/{id}/master.m3u8   /v1/playback/{id}/manifest.mpd
    GET  /v1/playback/{id}/{rendition}.m3u8?loc=SIGNED-URL
    GET  /v1/playback/{id}/steering.json?pathways=SITE:APPLIANCE~…,…[&home=&last=&pen=&rs=][&dash=1]
         (the session, playback.core.steer; players add _HLS_pathway/_HLS_throughput or the _DASH_ pair)
    POST /v1/events       GET /v1/popularity      GET /v1/fleet (steering's, with catalog totals)
    GET  /v1/fleet/charts?minutes=15  (the fleet page's charts, from Prometheus: playback.charts)
    GET  /v1/demand  (role "demand", callers_file) -> contracts.demand JSON: watched bytes per region and file
    GET  /  /play/{id}  /fleet  /static/...       GET /healthz /metrics

Background work (today: the reload SIGHUP asks for) runs under a TaskSupervisor: a failure is logged
with its traceback, counted in /metrics (`playback_task_failures_total{task}`) and the task restarted;
/healthz lists tasks that keep failing as `degraded` but stays 200 (playback still answers with the
config it has), and turns 503 only while draining. Connections and bodies are guarded
(contracts.webguard): header and idle timeouts, a connection cap, event bodies up to
max_event_body_bytes of bounded JSON.
"""
from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import logging
import re
import secrets
import signal
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from contracts import catalog as core_catalog
from contracts.callers import Unauthorized
from contracts.catalog import TitleEntry
from contracts.logs import log_event
from contracts.supervise import TaskSupervisor
from contracts.systemd import sd_notify
from contracts.tlsserve import ServerTls, site as tls_site
from contracts.webguard import GUARD, Guard, GuardedRunner
from origin.core.errors import ObjectNotFound, OriginError
from playback import config as playback_config
from playback.charts import ChartSource
from playback import sessions
from playback.core import cors, manifests, steer
from playback.core.clientip import client_ip
from playback.core.events import validate_batch
from playback.demand import PlaybackDemand, authorize, watched
from playback.state import State, open_catalog
from playback.steerclient import SteeringUnavailable, Withdrawn

log = logging.getLogger("playback")
STATE = web.AppKey("state", State)
SUPERVISOR = web.AppKey("supervisor", TaskSupervisor)
RELOAD = web.AppKey("reload", asyncio.Event)  # set by SIGHUP, consumed by the `reload` task
DEMAND = web.AppKey("demand", PlaybackDemand)  # watched bytes per region and file, spooled (playback.demand)
CHARTS = web.AppKey("charts", ChartSource)  # the fleet page's charts from Prometheus (playback.charts)
STATIC = Path(__file__).parent / "static"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class NotFound(ValueError):
    status_hint = 404
    reason = "not-found"


def refusals(handler: Handler) -> Handler:
    """Our refusals (exceptions with status_hint) become JSON errors; 503s carry Retry-After."""
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except (ValueError, SteeringUnavailable) as exc:
            if not hasattr(exc, "status_hint"):
                raise  # not a refusal of ours but a bug: a 500 (and a traceback), never a "bad request"
            state = request.app[STATE]
            status = getattr(exc, "status_hint", 400)
            reason = getattr(exc, "reason", "bad-request")
            state.metrics.errors.labels(reason).inc()
            headers = {"Retry-After": str(state.config.retry_after_s)} if status == 503 else {}
            if status == 503:
                log.warning("refused", extra={"fields": {"reason": reason, "detail": str(exc)}})
            return _json({"error": reason, "detail": str(exc)}, status=status, headers=headers)
    return wrapped


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(payload, separators=(",", ":")), status=status,
                        content_type="application/json", headers=headers)


async def _entry(request: web.Request) -> TitleEntry:
    """The title's catalog entry; 404 without one, 410 when it (or its version) is withdrawn."""
    state = request.app[STATE]
    entry = await state.entry(request.match_info["title_id"])
    if entry is None:
        raise NotFound(f"no title {request.match_info['title_id']!r}")
    gone = (await state.steering.withdrawals()).find(entry.title_id, entry.version)
    if gone is not None:
        raise Withdrawn(f"{entry.title_id}: withdrawn ({gone.target}) by {gone.by}: {gone.reason}")
    return entry


# ---- catalog -------------------------------------------------------------------------------------

def _summary(entry: TitleEntry) -> dict[str, Any]:
    out = core_catalog.summary(entry)
    out["posterUrl"] = f"/v1/titles/{entry.title_id}/poster" if entry.poster else None
    out["hls"] = f"/v1/playback/{entry.title_id}/master.m3u8"
    out["dash"] = f"/v1/playback/{entry.title_id}/manifest.mpd"
    return out


@refusals
async def titles(request: web.Request) -> web.Response:
    q, genre = request.query.get("q") or None, request.query.get("genre") or None
    found = await request.app[STATE].titles(q, genre)
    return _json({"titles": [_summary(e) for e in found], "count": len(found)})


@refusals
async def title(request: web.Request) -> web.Response:
    entry = await _entry(request)
    return _json({**core_catalog.to_dict(entry), **_summary(entry)})


@refusals
async def poster(request: web.Request) -> web.Response:
    entry = await _entry(request)
    if not entry.poster:
        raise NotFound("no poster")
    try:
        body = await request.app[STATE].poster(entry.poster)
    except ObjectNotFound:
        raise NotFound("poster missing at the origin") from None
    return web.Response(body=body, content_type="image/jpeg",
                        headers={"Cache-Control": "public, max-age=86400"})


# ---- manifests -----------------------------------------------------------------------------------

_REQUEST_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def _client_of(request: web.Request) -> str:
    client = client_ip(request.remote, request.headers.get("X-Forwarded-For"), request.app[STATE].trusted)
    if client is None:
        raise manifests.PlaybackError("client address unknown")
    return client


async def _play(request: web.Request) -> sessions.Play:
    """One steering call for every file of the title, for this client; one pathway per site
    (playback.sessions). The play's request id goes to steering, which puts it in the decision log
    and in every URL, so the appliances' access log lines name it too."""
    given = request.headers.get("X-Request-Id", "")
    request_id = given if _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)
    entry = await _entry(request)
    return await sessions.play(request.app[STATE], entry, _client_of(request), request_id)


def _steering_uri(request: web.Request, play: sessions.Play, dash: bool) -> manifests.Url | None:
    if not request.app[STATE].config.content_steering:
        return None
    return _absolute_steering_uri(request, play.entry.title_id, play.session(), dash)


def _absolute_steering_uri(request: web.Request, title_id: str, session: steer.Session, dash: bool) -> manifests.Url:
    """On the configured public URL, else the origin this request came to (its Host, validated); a
    Host that is no valid host gives a rooted reference instead."""
    base = request.app[STATE].config.public_url or f"{request.scheme}://{request.host}"
    try:
        return manifests.steering_uri(title_id, session, dash, base)
    except manifests.PlaybackError:
        return manifests.steering_uri(title_id, session, dash)


PRIVATE = {"Cache-Control": "private, no-store"}  # signed for one client: no shared cache may keep it


@refusals
async def master(request: web.Request) -> web.Response:
    play = await _play(request)
    uri = _steering_uri(request, play, dash=False)
    return web.Response(text=manifests.hls_master(play.entry, play.pathways, uri),
                        headers={**PRIVATE, "X-Request-Id": play.request_id},
                        content_type="application/vnd.apple.mpegurl")


@refusals
async def mpd(request: web.Request) -> web.Response:
    play = await _play(request)
    uri = _steering_uri(request, play, dash=True)
    return web.Response(text=manifests.dash_mpd(play.entry, play.pathways, uri),
                        headers={**PRIVATE, "X-Request-Id": play.request_id}, content_type="application/dash+xml")


@refusals
async def media(request: web.Request) -> web.Response:
    state = request.app[STATE]
    entry = await _entry(request)
    name = request.match_info["rendition"]
    r = next((r for r in entry.renditions if r.name == name), None)
    if r is None:
        raise NotFound(f"no rendition {name!r} in {entry.title_id!r}")
    given = request.query.getall("loc", [])
    if len(given) > 1:
        raise manifests.BadLocation("loc: given more than once")
    fleet = await state.steering.fleet(max_age_s=3600)
    loc = manifests.check_location(r, given[0] if given else "", list(steer.base_urls(fleet)))
    return web.Response(text=manifests.hls_media(r, loc), headers=PRIVATE,
                        content_type="application/vnd.apple.mpegurl")


@refusals
async def steering_manifest(request: web.Request) -> web.Response:
    """Reordered by the fleet's live state and the player's report, with clones for new pathways
    (playback.sessions); if steering cannot be reached, the session's own order. The RELOAD-URI is
    rebuilt from the parsed session, never echoed."""
    entry = await _entry(request)
    client = client_ip(request.remote, request.headers.get("X-Forwarded-For"), request.app[STATE].trusted)
    body = await sessions.steering_answer(
        request.app[STATE], entry, request.query, client,
        lambda session, dash: _absolute_steering_uri(request, entry.title_id, session, dash))
    # private: a clone carries URLs signed for this client
    return _json(body, headers={"Cache-Control": "private, no-store"})


# ---- events, popularity, fleet --------------------------------------------------------------------

@refusals
async def events(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await request.app[GUARD].read_json(request, state.config.max_event_body_bytes, want=(dict, list))
    items = body.get("events", body) if isinstance(body, dict) else body  # one event, a list, or {"events": ...}
    items = [items] if isinstance(items, dict) else items if isinstance(items, list) else []  # else: refused below
    ids = [e.get("videoId") for e in items[:state.config.max_events_per_request] if isinstance(e, dict)]
    for title_id in {i for i in ids if isinstance(i, str) and 0 < len(i) <= 128}:  # (an object is unhashable)
        await state.entry(title_id)  # warm the cache; validation itself is pure
    now = time.time()
    accepted = validate_batch(body, state.cached_entry, now, state.config.max_events_per_request)
    client = client_ip(request.remote, request.headers.get("X-Forwarded-For"), state.trusted)
    default = state.config.demand.region
    files = []
    for e in accepted:  # popularity, and what it added per file: the demand, in the region of the play
        region = state.play_sites.region(client, e.title, now, default) if client is not None else default
        files += [(region, *w) for w in watched(state.popularity, e, state.cached_entry(e.title), now)]  # type: ignore[arg-type]
    await request.app[DEMAND].record(files, now)  # on disk before the 2xx (else SpoolUnavailable: 503)
    return _json({"accepted": len(accepted)}, status=202)


async def demand(request: web.Request) -> web.Response:
    """GET /v1/demand, for the fill planner: a caller of the callers file with the role "demand"."""
    state = request.app[STATE]
    try:
        authorize(state.config, request.headers.get("Authorization"), request.method, request.raw_path)
    except Unauthorized as exc:
        state.metrics.errors.labels(exc.reason).inc()
        return _json({"error": exc.reason, "detail": str(exc)}, status=exc.status_hint,
                     headers={"WWW-Authenticate": "Bearer"} if exc.status_hint == 401 else None)
    return web.Response(body=await request.app[DEMAND].encoded(), content_type="application/json",
                        headers={"Cache-Control": "no-store"})


async def popularity(request: web.Request) -> web.Response:
    return _json(request.app[STATE].popularity.snapshot(time.time()))


@refusals
async def fleet(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = dict(await state.steering.fleet())
    entries = await state.titles(None, None)
    body["catalog"] = {"titles": len(entries), "files": sum(len(e.renditions) for e in entries)}
    return _json(body, headers={"Cache-Control": "no-store"})


@refusals
async def fleet_charts(request: web.Request) -> web.Response:
    minutes = request.query.get("minutes", "15")
    body = await request.app[CHARTS].charts(int(minutes) if minutes.isascii() and minutes.isdigit() else -1)
    return _json(body, headers={"Cache-Control": "no-store"})


async def healthz(request: web.Request) -> web.Response:
    """Degraded is still 200 (still serving); 503 only while draining."""
    state, degraded = request.app[STATE], request.app[SUPERVISOR].degraded()
    body = {**state.health(), "degraded": degraded}
    if degraded and not state.draining:
        body["status"] = "degraded"
    return _json(body, status=503 if state.draining else 200)


async def metrics(request: web.Request) -> web.Response:
    """The service's registry (its own series and the supervisor's), then the guard's."""
    text = request.app[STATE].metrics.text() + request.app[GUARD].metrics_text("playback")
    return web.Response(text=text, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


def page(name: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})
    return handler


# ---- lifecycle -----------------------------------------------------------------------------------

async def _client(app: web.Application) -> AsyncIterator[None]:
    await app[STATE].steering.start()
    await app[CHARTS].start()
    yield
    await app[CHARTS].close()
    await app[STATE].steering.close()


async def _background(app: web.Application) -> AsyncIterator[None]:
    """The supervised tasks; stopped (and awaited) at cleanup, after in-flight requests finished."""
    sup, demand_ = app[SUPERVISOR], app[DEMAND]
    await demand_.open()  # the spool replayed before the listener opens
    sup.spawn("reload", lambda: _reloads(app[STATE], app[RELOAD], lambda: sup.succeeded("reload")))
    sup.every("demand-compact", lambda: app[STATE].config.demand.compact_interval_s, demand_.compact)
    yield
    await sup.shutdown()
    await demand_.close()


def _trusted_peer(state: State, peer: str) -> bool:
    """Our load balancers (trusted_proxies) carry many clients: the per-client connection cap skips them."""
    try:
        addr = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(addr in net for net in state.trusted)


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CORS on the player-facing routes (playback.core.cors): preflights answered here, before routing
    would say 405; every answer, errors included, carries the grant."""
    if not cors.player_route(request.path):
        return await handler(request)
    allowed, origin = request.app[STATE].config.cors_allow_origins, request.headers.get("Origin")
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        status, headers = cors.preflight(origin, request.headers.get("Access-Control-Request-Method"), allowed)
        return web.Response(status=status, headers=headers)
    grant = cors.response_headers(origin, allowed)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(grant)
        raise
    response.headers.update(grant)
    return response


def make_app(state: State) -> web.Application:
    app = web.Application(client_max_size=state.config.max_event_body_bytes,  # a backstop: the guard reads bodies
                          middlewares=[cors_middleware])
    Guard(lambda: state.config.guard, exempt=lambda peer: _trusted_peer(state, peer)).install(app)
    app[STATE] = state
    app[SUPERVISOR] = TaskSupervisor("playback", logging.getLogger("playback.tasks"), registry=state.metrics.registry)
    app[RELOAD] = asyncio.Event()
    app[DEMAND] = PlaybackDemand(lambda: state.config)
    app[CHARTS] = ChartSource(lambda: state.config)
    app.cleanup_ctx.append(_client)
    app.cleanup_ctx.append(_background)
    r = app.router
    r.add_get("/v1/titles", titles)
    r.add_get("/v1/titles/{title_id}", title)
    r.add_get("/v1/titles/{title_id}/poster", poster)
    r.add_get("/v1/playback/{title_id}/master.m3u8", master)
    r.add_get("/v1/playback/{title_id}/manifest.mpd", mpd)
    r.add_get("/v1/playback/{title_id}/steering.json", steering_manifest)
    r.add_get("/v1/playback/{title_id}/{rendition}.m3u8", media)
    r.add_post("/v1/events", events)
    r.add_get("/v1/popularity", popularity)
    r.add_get("/v1/demand", demand)
    r.add_get("/v1/fleet", fleet)
    r.add_get("/v1/fleet/charts", fleet_charts)
    r.add_get("/healthz", healthz)
    r.add_get("/metrics", metrics)
    r.add_get("/", page("catalog.html"))
    r.add_get("/play/{title_id}", page("player.html"))
    r.add_get("/fleet", page("fleet.html"))
    r.add_static("/static/", STATIC)
    return app


class ReloadFailed(Exception):
    """The new config could not be read; playback keeps serving with the running one."""


async def _reloads(state: State, requested: asyncio.Event, succeeded: Callable[[], None]) -> None:
    """The `reload` task: one reload per SIGHUP. A failed one raises to the supervisor (logged with its
    traceback, counted); the event stays consumed, so the next SIGHUP retries."""
    while True:
        await requested.wait()
        requested.clear()
        await reload(state)
        succeeded()


async def reload(state: State) -> None:
    """Read the config (and open a changed origin) in a thread, then swap on the loop: requests in
    flight finish with what they started with, none is dropped."""
    if state.config.source is None:
        return
    try:
        config = await asyncio.to_thread(playback_config.load, state.config.source)
        catalog = None if config.origin == state.config.origin else await asyncio.to_thread(open_catalog, config)
    except (ValueError, OSError, OriginError) as exc:  # ConfigError is a ValueError
        raise ReloadFailed(f"keeping the running config: {exc}") from exc
    if (config.listen, config.port, config.tls) != (state.config.listen, state.config.port, state.config.tls):
        log_event(log, "listen-change-needs-restart", logging.WARNING, listen=state.config.listen,
                  port=state.config.port, tls=state.config.tls is not None)
    state.adopt(config, catalog)
    log_event(log, "reloaded", steering=list(config.steering_urls), origin=str(config.origin))


async def serve(config: playback_config.PlaybackConfig, tls: ServerTls | None = None) -> None:
    """Run until SIGTERM/SIGINT, then drain. The `listening` log event names the bound port. With `tls`,
    HTTPS (SIGHUP re-reads its certificate files too)."""
    state = State(config)
    app = make_app(state)
    runner = GuardedRunner(app, app[GUARD], access_log=None, shutdown_timeout=config.drain_timeout_s)
    await runner.setup()
    await tls_site(runner, config.listen, config.port, tls).start()
    if tls is not None:
        app[SUPERVISOR].spawn("tls-reload", lambda: tls.reloads(lambda: app[SUPERVISOR].succeeded("tls-reload")))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: (app[RELOAD].set(), tls and tls.requested.set()))
    log_event(log, "listening", listen=config.listen, port=runner.addresses[0][1], tls=tls is not None,
              origin=str(config.origin))
    sd_notify("READY=1")
    await stop.wait()
    state.draining = True
    sd_notify("STOPPING=1")
    log_event(log, "draining", grace_s=config.drain_grace_s)
    await asyncio.sleep(config.drain_grace_s)
    try:
        await runner.cleanup()
    except Exception:  # noqa: BLE001 - exiting anyway; say why instead of hiding it
        log.exception("cleanup-failed")
    log_event(log, "stopped")
