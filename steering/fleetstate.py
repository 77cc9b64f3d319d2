"""`GET /v1/fleet/state`: this replica's whole view of the fleet, for the fill planner (`fill plan`).

`/v1/fleet` gives counts; the planner needs, per appliance, the fleet file's placement (site, base URL,
capacity) and what the last heartbeat said: disks with their tier, state and size, the decayed
popularity counters, and every key it holds (the inventory). Version 1 on the wire is JSON:

    {"v": 1, "generated_at": 1767225600.0,
     "appliances": [{"id": "ams-1", "site": "ams", "base_url": "http://ams-1:8080", "capacity_bps": 10e9,
                     "status": "up", "reason": "",
                     "report": null | {"age_s": 0.4, "seq": 812, "site": "ams", "accepting": true,
                                       "draining": false,
                                       "disks": [{"tier": "ssd", "state": "ok", "total_bytes": N,
                                                  "free_bytes": N}],
                                       "popularity": {"<key>": [requests, bytes]}},
                     "inventory": {"generation": 7 | null, "files": ["<key>", ...]}}]}

Appliances in the fleet file's order; inventory keys sorted. The fill planner decodes it on its side
(fill.fleetstate), since the planner must not import steering. Callers need the role "fleet"
(contracts.callers). The state is copied on the event loop (it changes there); sorting and JSON
encoding of ~10^5 keys per appliance run in a thread, and the body is compressed when the caller
accepts it (keys compress well).

Registered by steering.server.make_app:
    app.router.add_get("/v1/fleet/state", fleet_state_handler(replica))
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable

from aiohttp import web

from contracts.callers import Unauthorized
from steering.auth import requires

SCHEMA_VERSION = 1
Handler = Callable[[web.Request], Awaitable[web.Response]]


def snapshot(replica: Any) -> list[dict[str, Any]]:
    """Per appliance, plain copies of what the planner needs (on the loop: cheap, no sorting)."""
    state, now = replica.state, replica.clock()
    out = []
    for site in state.fleet.sites.values():
        for spec in site.appliances:
            health = state.health.get(spec.id)
            item: dict[str, Any] = {
                "id": spec.id, "site": site.id, "base_url": spec.base_url, "capacity_bps": spec.capacity_bps,
                "status": health.status.value if health is not None else "unknown",
                "reason": health.reason if health is not None else "",
                "report": None,
                "inventory": {"generation": state.inventory.generation(spec.id),
                              "files": list(state.inventory.files_of(spec.id))},
            }
            report = state.reports.get(spec.id)
            if report is not None:
                h = report.health
                item["report"] = {
                    "age_s": round(max(now - report.received_at, 0.0), 3), "seq": report.seq, "site": report.site,
                    "accepting": h.accepting, "draining": h.draining,
                    "disks": [{"tier": d.tier, "state": d.state.value, "total_bytes": d.total_bytes,
                               "free_bytes": d.free_bytes} for d in h.disks],
                    "popularity": {k: [r, b] for k, (r, b) in h.popularity.items()},
                }
            out.append(item)
    return out


def encode(appliances: list[dict[str, Any]], generated_at: float) -> bytes:
    """The wire document (blocking for a big fleet: run it in a thread)."""
    for item in appliances:
        item["inventory"]["files"].sort()
    return json.dumps({"v": SCHEMA_VERSION, "generated_at": generated_at, "appliances": appliances},
                      separators=(",", ":")).encode()


def fleet_state_handler(replica: Any) -> Handler:
    """The handler for GET /v1/fleet/state over `replica` (steering.service.Replica)."""
    @requires("fleet")
    async def authorized(request: web.Request) -> web.Response:
        appliances = snapshot(replica)
        body = await asyncio.to_thread(encode, appliances, replica.wall())
        response = web.Response(body=body, content_type="application/json", headers={"Cache-Control": "no-store"})
        response.enable_compression()
        return response

    async def fleet_state(request: web.Request) -> web.Response:
        try:
            return await authorized(request)
        except Unauthorized as exc:  # Forbidden is one too (403)
            replica.metrics.errors.labels(exc.reason).inc()
            return web.json_response({"error": exc.reason, "detail": str(exc)}, status=exc.status_hint)
    return fleet_state


__all__ = ["fleet_state_handler", "snapshot", "encode", "SCHEMA_VERSION"]
