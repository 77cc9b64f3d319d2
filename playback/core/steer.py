"""The steering manifest (HLS Content Steering / DASH-IF Content Steering) from steering's live fleet.

The session's pathways (appliances, in the order steering ranked them at play time) ride in the
manifest's own URL. Each reload reorders them with the fleet's current state: usable appliances first
in their original order, then saturated ones (egress near capacity), and down, draining or
not-accepting ones are left out — unless that would leave nothing, when the original order stands.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence


@dataclass(frozen=True)
class ApplianceState:
    usable: bool
    saturated: bool


def fleet_states(fleet: Mapping[str, Any], saturation: float) -> dict[str, ApplianceState]:
    """steering's GET /v1/fleet -> {appliance id: state}."""
    out = {}
    for site in fleet.get("sites", []):
        for a in site.get("appliances", []):
            usable = a.get("status") == "up" and a.get("accepting", True) and not a.get("draining", False)
            cap = a.get("capacity_bps") or 0
            saturated = bool(cap) and (a.get("egress_bps") or 0) >= saturation * cap
            out[a["id"]] = ApplianceState(bool(usable), saturated)
    return out


def base_urls(fleet: Mapping[str, Any]) -> dict[str, str]:
    """{base URL: appliance id} of every appliance of the fleet."""
    return {a["base_url"].rstrip("/"): a["id"] for s in fleet.get("sites", []) for a in s.get("appliances", [])}


def priority(pathways: Sequence[str], states: Mapping[str, ApplianceState] | None) -> list[str]:
    if not states:
        return list(pathways)
    good = [p for p in pathways if p in states and states[p].usable and not states[p].saturated]
    busy = [p for p in pathways if p in states and states[p].usable and states[p].saturated]
    return (good + busy) or list(pathways)


def steering_manifest(pathways: Sequence[str], states: Mapping[str, ApplianceState] | None, ttl_s: int,
                      reload_uri: str, dash: bool) -> dict[str, Any]:
    order = priority(pathways, states)
    body: dict[str, Any] = {"VERSION": 1, "TTL": ttl_s, "RELOAD-URI": reload_uri, "PATHWAY-PRIORITY": order}
    if dash:  # the DASH-IF spec's name; dash.js (the reference player) reads PATHWAY-PRIORITY, so both
        body["SERVICE-LOCATION-PRIORITY"] = order
    return body
