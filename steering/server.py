"""Steering's HTTP shell (aiohttp): thin handlers over `Replica`, plus the replica's background life —
a ticker that marks silent appliances down, a watcher that reloads changed files, SIGHUP (reload
everything, the config file too), SIGTERM (drain: /healthz turns 503, the listener closes after a
grace period, in-flight requests finish).

    GET  /v1/steer?file=KEY&client=IP[&ttl_s=N][&explain=1]  -> {"locations": [...], "expires_at": N}
    POST /v1/steer  {"client": IP, "files": [KEY, ...], "ttl_s": N}
                    -> {"expires_at": N, "files": {KEY: {"locations": [...]}, ...}}
    POST /v1/heartbeat  (msgpack, contracts.heartbeat)  -> ack, msgpack or JSON (Accept)
    GET  /v1/fleet, /healthz, /metrics
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import secrets
import signal
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from contracts.systemd import sd_notify
from aiohttp import web

from contracts.heartbeat import CONTENT_TYPE as MSGPACK, SIGNATURE_HEADER, ack_to_dict, encode_ack
from contracts.keys import load_keyring
from steering import config as steering_config
from steering.config import SteeringConfig
from steering.fleetconf import load_fleet
from steering.geoip import GeoDatabase
from steering.fillplan import FillPlanner
from steering.metrics import labels
from steering.service import BadRequest, Loaded, Replica, SteerAnswer, dumps, file_signature, load_all

log = logging.getLogger("steering")
REPLICA = web.AppKey("replica", Replica)
PLANNER = web.AppKey("planner", FillPlanner)
RELOADER = web.AppKey("reloader", "Reloader")


# ---- handlers ---------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.Response]]


def refusals(handler: Handler) -> Handler:
    """Turn our refusals (ValueErrors carrying status_hint and reason, ours and contracts') into JSON
    errors. A wrapper, not an aiohttp middleware: aiohttp rebuilds the middleware chain per request."""
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except ValueError as exc:
            status = getattr(exc, "status_hint", 400)
            reason = getattr(exc, "reason", "bad-request")
            request.app[REPLICA].metrics.inc("steering_errors_total", labels(reason=reason))
            return _json({"error": reason, "detail": str(exc)}, status=status)
    return wrapped


@refusals
async def steer_get(request: web.Request) -> web.Response:
    replica = request.app[REPLICA]
    q = request.query
    if "file" not in q:
        raise BadRequest("file: required")
    given = request.headers.get("X-Request-Id")
    request_id = given if given is not None and _REQUEST_ID.fullmatch(given) else None
    expires_at, (answer,) = replica.steer([q["file"]], q.get("client") or request.remote or "", _ttl(q.get("ttl_s")),
                                          request_id)
    body: dict[str, Any] = {"locations": answer.locations, "expires_at": expires_at}
    if q.get("explain"):
        body["decision"] = _explain(answer)
    return _json(body, status=200 if answer.locations else 503)


@refusals
async def steer_post(request: web.Request) -> web.Response:
    replica = request.app[REPLICA]
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("body: must be JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("files"), list):
        raise BadRequest("files: must be a list of file keys")
    files = body["files"]
    if not 0 < len(files) <= replica.config.server.max_files_per_request or not all(isinstance(f, str) for f in files):
        raise BadRequest(f"files: 1..{replica.config.server.max_files_per_request} file keys (strings)")
    client = body.get("client") or request.remote or ""
    if not isinstance(client, str):
        raise BadRequest("client: must be an IP address string")
    request_id = request_id_of(request)
    expires_at, answers = replica.steer(files, client, _ttl(body.get("ttl_s")), request_id)
    explain = bool(body.get("explain"))
    # `holds` (one flag per location): which appliances have the file now, so a caller grouping URLs by
    # appliance (playback's pathways) can route a file an appliance lacks to one that has it.
    out = {a.file: {"locations": a.locations, "holds": [c.holds for c in a.decision.candidates][:len(a.locations)],
                    **({"decision": _explain(a)} if explain else {})}
           for a in answers}
    response = _json({"expires_at": expires_at, "files": out})
    response.headers["X-Request-Id"] = request_id
    return response


_REQUEST_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def request_id_of(request: web.Request) -> str:
    """The caller's X-Request-Id (playback sends one per play) when well-formed, else a new one."""
    given = request.headers.get("X-Request-Id", "")
    return given if _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)


def _ttl(raw: Any) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise BadRequest("ttl_s: must be an integer number of seconds") from None


def _explain(answer: SteerAnswer) -> dict[str, Any]:
    d = answer.decision
    return {"method": d.method.value, "outcome": d.outcome.value, "site": d.site,
            "candidates": [{"appliance": c.appliance.id, "site": c.appliance.site, "holds": c.holds}
                           for c in d.candidates]}


@refusals
async def heartbeat(request: web.Request) -> web.Response:
    replica = request.app[REPLICA]
    ack = replica.heartbeat(await request.read(), request.headers.get(SIGNATURE_HEADER))
    if "application/json" in request.headers.get("Accept", ""):
        return _json(ack_to_dict(ack))
    return web.Response(body=encode_ack(ack), content_type=MSGPACK)


async def fleet(request: web.Request) -> web.Response:
    return _json(request.app[REPLICA].fleet_json())


async def healthz(request: web.Request) -> web.Response:
    replica = request.app[REPLICA]
    return _json(replica.health_json(), status=503 if replica.draining else 200)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[REPLICA].metrics_text(), content_type="text/plain",
                        headers={"X-Prometheus-Format": "0.0.4"})


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps(payload), status=status, content_type="application/json")


# ---- background life --------------------------------------------------------------------------

class Reloader:
    """Reloads what changed: the fleet, key and GeoIP files are polled; SIGHUP reloads everything.
    Files are read in a thread; a failed reload keeps the previous state and is logged and counted."""

    def __init__(self, replica: Replica, config_path: Path | None) -> None:
        self.replica = replica
        self.config_path = config_path
        self.seen = self._signatures(replica.config)
        self._lock = asyncio.Lock()

    def _signatures(self, config: SteeringConfig) -> dict[str, Any]:
        return {"config": file_signature(self.config_path), "fleet": file_signature(config.fleet_file),
                "keys": file_signature(config.key_file), "geo": file_signature(config.geo.database)}

    async def reload(self, force: bool = False) -> bool:
        async with self._lock:
            now = self._signatures(self.replica.config)
            parts = set(now) if force else {k for k in now if now[k] != self.seen[k]}
            if not parts:
                return False
            try:
                config, loaded = await asyncio.to_thread(self._read, parts)
            except (ValueError, OSError) as exc:
                self.seen = now  # don't retry a broken file every poll; its next change retries
                self.replica.metrics.inc("steering_reloads_total", labels(result="error"))
                log.error("reload failed, keeping the running config: %s", exc)
                return False
            self.replica.adopt(config, loaded)
            self.seen = self._signatures(config)
            self.replica.metrics.inc("steering_reloads_total", labels(result="ok"))
            log.info("reloaded", extra={"fields": {"parts": sorted(parts), "sites": len(loaded.fleet.sites),
                                                    "signing_key": loaded.keys.signing_id}})
            return True

    def _read(self, parts: set[str]) -> tuple[SteeringConfig, Loaded]:
        old, cur = self.replica.config, self.replica.loaded
        config = steering_config.load(self.config_path) if "config" in parts and self.config_path else old
        if "config" in parts:
            return config, load_all(config)
        fleet = load_fleet(config.fleet_file) if "fleet" in parts else cur.fleet
        if config.default_site not in fleet.sites:
            raise steering_config.ConfigError(f"steering.default_site: {config.default_site!r} not in the fleet")
        keys = load_keyring(config.key_file) if "keys" in parts else cur.keys
        geo = cur.geo
        if "geo" in parts and config.geo.database:
            geo = GeoDatabase(config.geo.database)
        return config, Loaded(fleet=fleet, keys=keys, geo=geo)


async def _every(interval_s: Callable[[], float], step: Callable[[], Any]) -> None:
    while True:
        await asyncio.sleep(interval_s())
        try:
            result = step()
            if asyncio.iscoroutine(result):
                await result
        except Exception:  # noqa: BLE001 - a background step must not die silently nor kill the loop
            log.exception("background step failed")


async def _background(app: web.Application) -> AsyncIterator[None]:
    replica, reloader = app[REPLICA], app[RELOADER]
    planner = app[PLANNER]
    tasks = [asyncio.create_task(_every(lambda: replica.config.tick_interval_s, replica.tick)),
             asyncio.create_task(_every_async(lambda: replica.config.fill.replan_interval_s, planner.replan)),
             asyncio.create_task(_every(lambda: replica.config.server.reload_check_interval_s, reloader.reload)),
             asyncio.create_task(_every(lambda: 0.25, replica.decisions.flush))]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    replica.decisions.flush()


async def fill_manifest(request: web.Request) -> web.Response:
    """GET /v1/fill-manifest?appliance=ID: the appliance's last planned manifest (ETag / 304)."""
    appliance = request.query.get("appliance", "")
    if not appliance or len(appliance) > 64:
        return web.json_response({"error": "appliance: required"}, status=400)
    reply = request.app[PLANNER].reply(appliance, request.headers.get("If-None-Match"))
    return web.Response(status=reply.status, body=reply.body, headers=dict(reply.headers))


async def _every_async(interval: Callable[[], float], fn: Callable[[], Awaitable[None]]) -> None:
    await asyncio.sleep(1.0)  # let the first heartbeats arrive before the first plan
    while True:
        await fn()
        await asyncio.sleep(interval())


def make_app(replica: Replica, config_path: Path | None = None) -> web.Application:
    app = web.Application(client_max_size=replica.config.server.max_heartbeat_bytes)
    app[REPLICA] = replica
    app[RELOADER] = Reloader(replica, config_path)
    app[PLANNER] = FillPlanner(replica, replica.config.fill)
    app.cleanup_ctx.append(_background)
    app.router.add_get("/v1/steer", steer_get)
    app.router.add_post("/v1/steer", steer_post)
    app.router.add_post("/v1/heartbeat", heartbeat)
    app.router.add_get("/v1/fleet", fleet)
    app.router.add_get("/v1/fill-manifest", fill_manifest)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(config: SteeringConfig, loaded: Loaded, config_path: Path | None,
                ready: Callable[[int], None] | None = None) -> None:
    """Run until SIGTERM/SIGINT, then drain. `ready` gets the bound port (0 in config: any free one)."""
    replica = Replica(config, loaded)
    app = make_app(replica, config_path)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=config.server.drain_timeout_s)
    await runner.setup()
    site = web.TCPSite(runner, config.server.listen, config.server.port, backlog=1024)
    await site.start()
    port = runner.addresses[0][1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(app[RELOADER].reload(force=True)))
    fleet = loaded.fleet
    log.info("serving", extra={"fields": {"listen": config.server.listen, "port": port,
                                           "sites": len(fleet.sites), "appliances": len(fleet.appliances)}})
    sd_notify("READY=1")
    if ready is not None:
        ready(port)
    await stop.wait()
    replica.draining = True
    sd_notify("STOPPING=1")
    log.info("draining", extra={"fields": {"grace_s": replica.config.server.drain_grace_s}})
    await asyncio.sleep(replica.config.server.drain_grace_s)
    await runner.cleanup()
    log.info("stopped")


__all__ = ["make_app", "serve", "Reloader", "REPLICA", "RELOADER"]
