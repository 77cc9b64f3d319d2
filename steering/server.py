"""Steering's HTTP shell (aiohttp): thin handlers over `Replica`, plus the replica's background life —
a ticker that marks silent appliances down, a watcher that reloads changed files, SIGHUP (reload
everything, the config file too), SIGTERM (drain: /healthz turns 503, the listener closes after a
grace period, in-flight requests finish).

    GET  /v1/steer?file=KEY&client=IP[&ttl_s=N][&explain=1]  -> {"locations": [...], "expires_at": N}
    POST /v1/steer  {"client": IP, "files": [KEY, ...], "ttl_s": N}
                    -> {"expires_at": N, "files": {KEY: {"locations": [...]}, ...}}
    POST /v1/heartbeat  (msgpack, contracts.heartbeat)  -> ack, msgpack or JSON (Accept)
    GET  /v1/fleet, /healthz, /metrics
    GET  /v1/demand  (role "demand") -> contracts.demand JSON: decisions per client site and file
                     (steering.demand: the demand-trim and demand-save chores, saved again at SIGTERM)
    POST /v1/withdrawals (role "withdraw"), GET /v1/withdrawals (role "fleet" or "withdraw"): withdraw a
                     title or version fleet-wide, its files answered 410 by every replica (steering.withdrawals)

Every background chore (tick, reload, fleet fetch, fill plan, decision log flush) runs under one
TaskSupervisor: a failure is logged with its traceback, counted (`steering_task_failures_total{task}`
in /metrics), restarted after a backoff, and a chore that keeps failing is listed in /healthz as
degraded (so is `fleet` while the fleet is stale or left zones out: steering.fleetfetch). Degraded
stays HTTP 200: the replica still answers (from the last good state), so a load balancer should keep
it; only draining is 503. Handlers map only our refusals (exception classes with a `status_hint`) to
4xx; anything else is a bug: a 500, logged with its traceback. Connections and bodies are guarded
(contracts.webguard): header and idle timeouts, a connection cap, POST /v1/steer bodies up to
max_steer_body_bytes of bounded JSON, heartbeat bodies up to max_heartbeat_bytes and read only once the
signature header is well-formed.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import re
import secrets
import signal
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from contracts.callers import Unauthorized
from contracts.heartbeat import (CONTENT_TYPE as MSGPACK, SIGNATURE_HEADER, HeartbeatError, ack_to_dict, encode_ack,
                                 signer_of)
from contracts.ids import InvalidFileKey
from contracts.logs import log_event
from contracts.supervise import TaskSupervisor
from contracts.systemd import sd_notify
from contracts.tlsserve import ServerTls, site as tls_site
from contracts.webguard import GUARD, Guard, GuardedRunner, RequestRefused
from steering import demand as steering_demand
from steering.auth import AUTHENTICATE, authenticator, requires
from steering.config import SteeringConfig
from steering.core.prefixes import InvalidClientAddress
from steering.fillplan import FillPlanner
from steering.fleetfetch import FleetPoller, log_fleet
from steering.fleetstate import fleet_state_handler
from steering.reloader import Reloader
from steering.service import BadRequest, Loaded, Replica, SteerAnswer, dumps
from steering.withdrawals import (WITHDRAWALS, NoControlStore, NotWithdrawn, WithdrawalLog, withdrawals_get,
                                  withdrawals_post)
from contracts.withdrawals import WithdrawalError

log = logging.getLogger("steering")
REPLICA = web.AppKey("replica", Replica)
PLANNER = web.AppKey("planner", FillPlanner)
RELOADER = web.AppKey("reloader", Reloader)
SUPERVISOR = web.AppKey("supervisor", TaskSupervisor)
POLLER = web.AppKey("poller", FleetPoller)

# Our refusals and the contracts' (each carries status_hint and reason). A ValueError outside these
# is not a bad request but a bug, and must not be dressed up as a 400.
REFUSALS = (BadRequest, InvalidClientAddress, InvalidFileKey, HeartbeatError, Unauthorized, RequestRefused,
            WithdrawalError, NoControlStore, NotWithdrawn)


# ---- handlers ---------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.Response]]


def refusals(handler: Handler) -> Handler:
    """Our refusals become JSON 4xx errors; any other exception is a bug: a JSON 500, counted and
    logged with its traceback. A wrapper, not an aiohttp middleware: aiohttp rebuilds the middleware
    chain per request."""
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except REFUSALS as exc:
            status = getattr(exc, "status_hint", 400)
            reason = getattr(exc, "reason", "bad-request")
            request.app[REPLICA].metrics.errors.labels(reason).inc()
            return _json({"error": reason, "detail": str(exc)}, status=status)
        except web.HTTPException:
            raise  # aiohttp's own answers (413 body too large, ...)
        except Exception:  # noqa: BLE001 - a bug: answer 500, keep its traceback
            request.app[REPLICA].metrics.errors.labels("internal").inc()
            log.exception("internal-error", extra={"fields": {"method": request.method, "path": request.path}})
            return _json({"error": "internal", "detail": "internal error (logged)"}, status=500)
    return wrapped


@refusals
@requires("steer")
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
        body["decision"] = _explain(answer, replica.route_of(q.get("client") or request.remote or ""))
    return _json(body, status=200 if answer.locations else 503)


@refusals
@requires("steer")
async def steer_post(request: web.Request) -> web.Response:
    replica = request.app[REPLICA]
    body = await request.app[GUARD].read_json(request, replica.config.server.max_steer_body_bytes)
    if not isinstance(body.get("files"), list):
        raise BadRequest("files: must be a list of file keys")
    files = body["files"]
    if not 0 < len(files) <= replica.config.server.max_files_per_request or not all(isinstance(f, str) for f in files):
        raise BadRequest(f"files: 1..{replica.config.server.max_files_per_request} file keys (strings)")
    client = body.get("client") or request.remote or ""
    if not isinstance(client, str):
        raise BadRequest("client: must be an IP address string")
    request_id = request_id_of(request)
    expires_at, answers = replica.steer(files, client, _ttl(body.get("ttl_s")), request_id)
    route = replica.route_of(client) if body.get("explain") else None
    explain = bool(body.get("explain"))
    # `holds` (one flag per location): which appliances have the file now, so a caller grouping URLs by
    # appliance (playback's pathways) can route a file an appliance lacks to one that has it.
    out = {a.file: {"locations": a.locations, "holds": [c.holds for c in a.decision.candidates][:len(a.locations)],
                    **({"decision": _explain(a, route)} if explain else {})}
           for a in answers}
    # `site`: the client's site, as located (one localisation per call): playback counts the play's
    # viewing events there (playback.core.plays)
    response = _json({"expires_at": expires_at, "site": answers[0].decision.site if answers else None, "files": out})
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
    except (TypeError, ValueError, OverflowError):  # OverflowError: a JSON 1e999
        raise BadRequest("ttl_s: must be an integer number of seconds") from None


def _explain(answer: SteerAnswer, route: dict[str, Any] | None = None) -> dict[str, Any]:
    d = answer.decision  # `route`: the prefix that located the client (Replica.route_of)
    return {"method": d.method.value, "outcome": d.outcome.value, "site": d.site, "route": route,
            "candidates": [{"appliance": c.appliance.id, "site": c.appliance.site, "holds": c.holds}
                           for c in d.candidates]}


@refusals
async def heartbeat(request: web.Request) -> web.Response:
    replica = request.app[REPLICA]
    server = replica.config.server
    signature = request.headers.get(SIGNATURE_HEADER)
    if server.heartbeat_auth:
        signer_of(signature)  # its shape, before a byte of the body is read: anonymous bodies stay unread
    raw = await request.app[GUARD].read_body(request, server.max_heartbeat_bytes)
    ack = replica.heartbeat(raw, signature)
    if "application/json" in request.headers.get("Accept", ""):
        return _json(ack_to_dict(ack))
    return web.Response(body=encode_ack(ack), content_type=MSGPACK)


@refusals
@requires("fleet")
async def fleet(request: web.Request) -> web.Response:
    return _json(request.app[REPLICA].fleet_json())


async def healthz(request: web.Request) -> web.Response:
    """200 while serving, degraded or not (a failing chore leaves the last good state answering);
    503 only while draining, so a load balancer takes the replica out then and only then."""
    replica, sup = request.app[REPLICA], request.app[SUPERVISOR]
    body = replica.health_json()
    body["degraded"] = sup.degraded()  # names only: the errors are in the log and /metrics
    poller = request.app[POLLER]
    body["fleet"] = poller.health()  # source, revision, skipped zones, the last fetch error
    body["withdrawals"] = request.app[WITHDRAWALS].health()
    if poller.problem():  # a stale fleet (fetch or document refused) or zones left out
        body["degraded"] = sorted([*body["degraded"], "fleet"])
    if body["degraded"] and not replica.draining:
        body["status"] = "degraded"
    return _json(body, status=503 if replica.draining else 200)


async def metrics(request: web.Request) -> web.Response:
    """The replica's registry (its own series and the supervisor's), then the guard's."""
    text = request.app[REPLICA].metrics.text() + request.app[GUARD].metrics_text("steering")
    return web.Response(text=text, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps(payload), status=status, content_type="application/json")


# ---- background life --------------------------------------------------------------------------

async def _background(app: web.Application) -> AsyncIterator[None]:
    """Every chore under the app's supervisor; at cleanup (after in-flight requests finished) they
    are cancelled and awaited, then the decision log gets its last flush."""
    replica, reloader, planner, sup = app[REPLICA], app[RELOADER], app[PLANNER], app[SUPERVISOR]
    await steering_demand.restore(replica)  # before the listener opens: a restart keeps its counts
    sup.every("tick", lambda: replica.config.tick_interval_s, replica.tick)
    sup.spawn("reload", lambda: reloader.run(lambda: sup.succeeded("reload")))
    poller = app[POLLER]  # idles unless fleet_url is set
    sup.spawn("fleet-fetch", lambda: poller.run(lambda: sup.succeeded("fleet-fetch")))
    # first plan after a second: let the first heartbeats arrive
    sup.every("fill-plan", lambda: replica.config.fill.replan_interval_s, planner.replan, first_delay_s=1.0)
    # the withdrawal log, first read before the first request is answered (a restart refuses at once),
    # but a store that does not answer must not keep the replica from serving: the task retries it
    try:
        await asyncio.wait_for(app[WITHDRAWALS].poll(), timeout=10.0)
    except Exception:  # noqa: BLE001 - the task below retries it (logged, counted, degraded)
        log.exception("withdrawals-first-read-failed")
    sup.every("withdrawals", lambda: replica.config.fill.poll_interval_s, app[WITHDRAWALS].poll)
    sup.every("decision-log", 0.25, replica.decisions.flush)
    sup.every("demand-trim", 1.0, lambda: steering_demand.trim(replica))
    sup.every("demand-save", lambda: replica.config.demand.save_interval_s, lambda: steering_demand.save(replica))
    yield
    await sup.shutdown()
    replica.decisions.flush()
    try:  # SIGTERM: the counts outlive this process
        await steering_demand.save(replica)
    except Exception:  # noqa: BLE001 - exiting anyway: say why, keep the last periodic snapshot
        log.exception("demand-save-failed")


@refusals
@requires("manifests", own_appliance="appliance")
async def fill_manifest(request: web.Request) -> web.Response:
    """GET /v1/fill-manifest?appliance=ID: the appliance's last planned manifest (ETag / 304); the
    appliance itself (its signature) or a caller with the `manifests` role."""
    appliance = request.query.get("appliance", "")
    if not appliance or len(appliance) > 64:
        return web.json_response({"error": "appliance: required"}, status=400)
    reply = request.app[PLANNER].reply(appliance, request.headers.get("If-None-Match"))
    return web.Response(status=reply.status, body=reply.body, headers=dict(reply.headers))


@refusals
@requires("demand")
async def demand(request: web.Request) -> web.Response:
    """GET /v1/demand: this replica's demand per client site and file, decayed to now (contracts.demand,
    kind "steering"); for the fill planner."""
    body = await steering_demand.encoded(request.app[REPLICA])
    return web.Response(body=body, content_type="application/json", headers={"Cache-Control": "no-store"})


def make_app(replica: Replica, config_path: Path | None = None) -> web.Application:
    # Bodies are read by the guard with per-route limits (heartbeats: max_heartbeat_bytes, only once
    # signed); aiohttp's own app-wide limit is only a backstop for a handler that reads another way.
    app = web.Application(client_max_size=replica.config.server.max_steer_body_bytes)
    Guard(lambda: replica.config.server.guard).install(app)
    app[REPLICA] = replica
    app[AUTHENTICATE] = authenticator(replica)
    app[RELOADER] = Reloader(replica, config_path)
    app[PLANNER] = FillPlanner(replica, replica.config.fill)
    app[SUPERVISOR] = TaskSupervisor("steering", logging.getLogger("steering.tasks"),
                                     registry=replica.metrics.registry)
    app[POLLER] = FleetPoller(replica, app[RELOADER], app[SUPERVISOR].registry)
    app[WITHDRAWALS] = WithdrawalLog(replica)
    app.cleanup_ctx.append(_background)
    app.router.add_get("/v1/steer", steer_get)
    app.router.add_post("/v1/steer", steer_post)
    app.router.add_post("/v1/heartbeat", heartbeat)
    app.router.add_get("/v1/fleet", fleet)
    app.router.add_get("/v1/fleet/state", fleet_state_handler(replica))
    app.router.add_get("/v1/fill-manifest", fill_manifest)
    app.router.add_get("/v1/demand", demand)
    app.router.add_get("/v1/withdrawals", refusals(withdrawals_get))
    app.router.add_post("/v1/withdrawals", refusals(withdrawals_post))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(config: SteeringConfig, loaded: Loaded, config_path: Path | None,
                tls: ServerTls | None = None) -> None:
    """Run until SIGTERM/SIGINT, then drain. The `listening` log event names the bound port (port 0 in
    the config: any free one); SIGHUP asks the reload task to reload everything (and `tls`, HTTPS when
    given, its certificate files)."""
    replica = Replica(config, loaded)
    app = make_app(replica, config_path)
    runner = GuardedRunner(app, app[GUARD], access_log=None, shutdown_timeout=config.server.drain_timeout_s)
    await runner.setup()
    site = tls_site(runner, config.server.listen, config.server.port, tls)
    await site.start()
    if tls is not None:
        app[SUPERVISOR].spawn("tls-reload", lambda: tls.reloads(lambda: app[SUPERVISOR].succeeded("tls-reload")))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: (app[RELOADER].requested.set(), app[POLLER].requested.set(),
                                                    tls and tls.requested.set()))
    fleet = loaded.fleet
    log_fleet(loaded.fleet_info)
    log_event(log, "listening", listen=config.server.listen, port=runner.addresses[0][1], tls=tls is not None,
              sites=len(fleet.sites),
              appliances=len(fleet.appliances), fleet_revision=loaded.fleet_info.revision)
    sd_notify("READY=1")
    await stop.wait()
    replica.draining = True
    sd_notify("STOPPING=1")
    log_event(log, "draining", grace_s=replica.config.server.drain_grace_s)
    await asyncio.sleep(replica.config.server.drain_grace_s)
    await runner.cleanup()  # stops listening, lets requests finish, then the tasks stop (cleanup_ctx)
    log_event(log, "stopped")


__all__ = ["make_app", "serve", "REFUSALS", "REPLICA", "RELOADER", "SUPERVISOR"]
