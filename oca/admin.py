"""The appliance's control endpoints on the admin port (aiohttp): /healthz, /metrics (Prometheus),
/v1/health (the report steering also receives), /v1/inventory and /v1/bgp (sessions; `?routes=1`
adds the routes held: what `oca bgp` shows). The supervisor owns the state;
these handlers only render it. Two change it: POST /v1/drain {"reason": TEXT} and POST /v1/undrain
(`oca drain`, `oca undrain`; oca.drain), with the admin token as a bearer token — else 401."""
from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from prometheus_client import CollectorRegistry, generate_latest

from oca.drain import UNDRAINED, authorized, drained
from oca.metrics import SharedCounters, read_totals
from oca.store.health import disk_json
from oca.workers import SLOTS_PER_GENERATION

if TYPE_CHECKING:
    from oca.control import SupervisorView as Supervisor

SUPERVISOR = web.AppKey("supervisor", Any)


async def start_admin(sup: "Supervisor") -> tuple[web.AppRunner, int]:
    app = web.Application()
    app[SUPERVISOR] = sup
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/v1/health", _health)
    app.router.add_get("/v1/inventory", _inventory)
    app.router.add_get("/v1/bgp", _bgp)
    app.router.add_post("/v1/drain", _drain)
    app.router.add_post("/v1/undrain", _undrain)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, sup.config.admin.listen, sup.config.admin.port)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


async def _healthz(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR]
    report = sup.health_report()
    ok = report["accepting"]  # degraded still serves: 200, and the body says what to look at
    text = f"{report['status']}" + (f" ({', '.join(report['degraded'])})" if report["degraded"] else "")
    return web.Response(status=200 if ok else 503, text=text + "\n")


async def _health(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR]
    return web.json_response(sup.health_report())


async def _inventory(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR]
    entries = await asyncio.to_thread(sup.store.index.all)
    return web.json_response({"appliance": sup.config.appliance_id, "files": [
        {"key": e.key, "tier": e.tier.value, "size": e.size, "xxh3": e.xxh3} for e in entries]})


async def _bgp(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR]
    if sup.bgp is None:
        return web.json_response({"error": "no-bgp", "detail": "no [bgp] in the appliance config"}, status=404)
    body = sup.bgp.health()
    if request.query.get("routes"):
        body["routes"] = sup.bgp.routes_json()
    return web.json_response(body)


MAX_DRAIN_BODY = 4096


async def _drain(request: web.Request) -> web.Response:
    """Drain for maintenance: new plays go elsewhere, URLs handed out keep working (oca.drain)."""
    sup = request.app[SUPERVISOR]
    refused = _refuse_anonymous(request)
    if refused is not None:
        return refused
    if request.content_length is not None and request.content_length > MAX_DRAIN_BODY:
        return _error(413, "body-too-large", f"at most {MAX_DRAIN_BODY} bytes")
    raw = await request.content.read(MAX_DRAIN_BODY + 1)
    try:
        body = json.loads(raw) if raw.strip() else {}
        if not isinstance(body, dict) or set(body) - {"reason"} or len(raw) > MAX_DRAIN_BODY:
            raise ValueError('want {"reason": TEXT}')
        state = drained(body.get("reason", ""))
    except (ValueError, RecursionError) as exc:  # DrainStateError is one
        return _error(400, "bad-drain-request", str(exc))
    state = await sup.set_drain(state)
    return web.json_response(state.public())


async def _undrain(request: web.Request) -> web.Response:
    refused = _refuse_anonymous(request)
    if refused is not None:
        return refused
    state = await request.app[SUPERVISOR].set_drain(UNDRAINED)
    return web.json_response(state.public())


def _refuse_anonymous(request: web.Request) -> web.Response | None:
    if authorized(request.headers.get("Authorization"), request.app[SUPERVISOR].admin_token):
        return None
    response = _error(401, "unauthorized", "the admin token is required (Authorization: Bearer, from "
                                           "admin.token in the appliance's state directory)")
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _error(status: int, reason: str, detail: str) -> web.Response:
    return web.json_response({"error": reason, "detail": detail}, status=status)


async def _metrics(request: web.Request) -> web.Response:
    sup = request.app[SUPERVISOR]
    totals = read_totals(sup.metrics_path, 2 * SLOTS_PER_GENERATION)
    gauges: list[tuple[str, str, dict[str, str], float]] = [
        ("oca_egress_bits_per_second", "Egress rate over the last second.", {}, round(sup.egress_bps)),
        ("oca_draining", "1 while the appliance drains (maintenance or stopping).", {},
         int(sup.draining or sup.maintenance.draining)),
        ("oca_indexed_files", "Files in the index.", {}, sup.store.index.count()),
        ("oca_scrub_files_checked", "Files whose hash the scrub re-checked.", {}, sup.scrub_stats.files_checked),
        ("oca_scrub_corrupt_files", "Files the scrub found corrupt and dropped.", {}, sup.scrub_stats.corrupt),
    ]
    for d in map(disk_json, sup.disk_health):
        labels = {"disk": d["path"], "tier": d["tier"]}
        gauges.append(("oca_disk_up", "1 when the disk passes its checks.", labels, int(d["ok"])))
        gauges.append(("oca_disk_free_bytes", "Free bytes on the disk.", labels, d["free_bytes"]))
        gauges.append(("oca_disk_total_bytes", "Size of the disk.", labels, d["total_bytes"]))
        gauges.append(("oca_disk_files", "Files indexed on the disk.", labels, d["files"]))
    if sup.certificates is not None:  # [tls]: certificate expiry (handshakes by outcome: SharedCounters)
        gauges += sup.certificates.gauges()
    scrape = CollectorRegistry(auto_describe=False)  # this scrape's summed counters and gauges
    scrape.register(SharedCounters(totals, gauges, tls=sup.certificates is not None))
    text = generate_latest(scrape).decode() + generate_latest(sup.tasks.registry).decode()
    if sup.bgp is not None:
        text += generate_latest(sup.bgp.registry).decode()
    return web.Response(text=text, content_type="text/plain", charset="utf-8")

