"""A play and the steering manifest that follows it: the shell around playback.core.pathways (one
pathway per site) and playback.core.steer (the session, the player's hints, clones). The HTTP
handlers in playback.server call these with what they read off the request.

`play` makes one steering call for every file of the title, for this client, and groups the answer
into pathways. `steering_answer` reorders the session's pathways by the fleet's live state and the
player's report; when a site of the session (or the client's own) has no usable pathway any more but
has a usable appliance — its appliance was drained, a new one came up — it asks steering again for
this client (at most every steer.RESTEER_EVERY_S per session) and offers what is new as
PATHWAY-CLONES (HLS). Steering unreachable: the session's own order, as before.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Mapping

from contracts.catalog import TitleEntry
from contracts.logs import log_event
from playback.core import manifests, steer
from playback.core.pathways import Pathway, where_in
from playback.state import State
from playback.steerclient import SteeringUnavailable

log = logging.getLogger("playback")


@dataclass(frozen=True)
class Play:
    entry: TitleEntry
    pathways: tuple[Pathway, ...]
    request_id: str
    site: str | None  # the client's site, as steering located it

    def session(self) -> steer.Session:
        return steer.session_of(self.pathways, self.site)


def ttl_for(state: State, entry: TitleEntry) -> int:
    cfg = state.config
    return manifests.token_ttl_s(entry.duration_s, cfg.token_duration_factor, cfg.token_slack_s,
                                 cfg.token_min_ttl_s, cfg.token_max_ttl_s)


async def locate(state: State, entry: TitleEntry, client: str, request_id: str | None,
                 fleet_max_age_s: float = 300) -> tuple[tuple[Pathway, ...], str | None, list[str]]:
    """Steering's URLs for every file, for this client, as pathways per site; the client's site; and
    the URLs refused (malformed)."""
    ttl = ttl_for(state, entry)
    located, fleet = await asyncio.gather(state.steering.steer(client, [r.key for r in entry.renditions], ttl,
                                                               request_id),
                                          state.steering.fleet(max_age_s=fleet_max_age_s), return_exceptions=True)
    if isinstance(located, BaseException):
        raise located
    locations, holds, site = located
    where = where_in(steer.fleet_sites(fleet) if isinstance(fleet, dict) else {})
    refused: list[str] = []
    pathways = manifests.build_pathways(entry, locations, where, state.config.max_pathways, holds, refused.append)
    return pathways, site, refused


async def play(state: State, entry: TitleEntry, client: str, request_id: str) -> Play:
    pathways, site, refused = await locate(state, entry, client, request_id)
    if site is not None:
        state.play_sites.played(client, entry.title_id, site, time.time() + ttl_for(state, entry))
    if refused:
        state.metrics.urls_refused.inc()
        log_event(log, "steering-url-refused", logging.WARNING, title=entry.title_id, request_id=request_id,
                  refused=refused[:8])
    state.metrics.plays.inc()
    log_event(log, "play", title=entry.title_id, client=client, request_id=request_id, site=site,
              pathways={p.id: sorted(p.hosts) for p in pathways})
    return Play(entry, pathways, request_id, site)


async def steering_answer(state: State, entry: TitleEntry, query: Mapping[str, str], client: str | None,
                          uri_for: Any) -> dict[str, Any]:
    """The steering manifest for one reload. `uri_for(session, dash)` gives this server's steering URI
    for a session (absolute when it can be: clones need absolute media URIs)."""
    session = steer.parse_session(query)
    dash = query.get("dash") == "1"
    hints = steer.parse_hints(query, dash)
    try:
        states = steer.fleet_states(await state.steering.fleet(), state.config.saturation_fraction)
    except SteeringUnavailable:
        states = None
    now = time.time()
    lowest = min((v.bandwidth for v in entry.video), default=0) + max((a.bandwidth for a in entry.audio), default=0)
    verdict = steer.decide(session, states, hints, now, lowest, resteer=not dash and client is not None)
    clones: list[dict[str, Any]] = []
    if verdict.resteer and states:
        session, clones = await _clones(state, entry, session, states, client or "", uri_for)
        why = verdict.why
        verdict = steer.decide(replace(session, penalties=verdict.penalties), states, steer.Hints(), now, lowest,
                               resteer=False)
        verdict = replace(verdict, why=why + verdict.why)
    if verdict.why or clones:
        log_event(log, "steering-manifest", title=entry.title_id, priority=list(verdict.priority),
                  why=list(verdict.why), clones=[c["ID"] for c in clones])
    following = replace(session, penalties=verdict.penalties, last=verdict.priority[0] if verdict.priority else None)
    return steer.steering_manifest(verdict.priority, state.config.steering_ttl_s, uri_for(following, dash).text,
                                   dash, clones)


async def _clones(state: State, entry: TitleEntry, session: steer.Session, states: Mapping[str, steer.ApplianceState],
                  client: str, uri_for: Any) -> tuple[steer.Session, list[dict[str, Any]]]:
    """Ask steering again; what it yields that the session lacks, as clones of its first pathway."""
    try:
        fresh, _, _ = await locate(state, entry, client, None, fleet_max_age_s=60)
    except (SteeringUnavailable, manifests.PlaybackError) as exc:  # NoLocations is one; Withdrawn: the handler's
        log_event(log, "resteer-failed", logging.WARNING, title=entry.title_id, error=str(exc))
        return replace(session, resteered_at=time.time()), []
    added = steer.new_pathways(session, fresh, states, len(entry.renditions))
    grown = steer.grown(session, fresh, added, time.time())
    base = uri_for(grown, False)
    if not added or base.scheme is None:  # a relative steering URI: no absolute media URIs to offer
        return grown if not added else replace(session, resteered_at=time.time()), []
    first = session.pathways[0].id
    return grown, [manifests.pathway_clone(entry, p, first, base) for p in added]


__all__ = ["Play", "play", "locate", "steering_answer", "ttl_for"]
