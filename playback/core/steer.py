"""The steering manifest (HLS Content Steering, DASH-IF Content Steering): which pathway a session
should use now, from the fleet's live state and what the player reports. Pure.

The session rides in the steering manifest's own URL (playback keeps no per-session state):
`pathways=ams:ams-1~ams-2,fra:fra-1` (each pathway and the appliances its bytes come from, in the
order they were ranked), `home` (the client's site as steering located it), `last` (the pathway we
put first last time), `pen=fra:1767225900` (pathways penalised until then) and `rs` (when we last
asked steering again). Each answer writes the next RELOAD-URI. A bare `pathways=a,b` (sessions from
before pathways per site) names one appliance per pathway.

Each reload:
1. A pathway is usable when every appliance it uses is up, accepting and not draining (a drained
   appliance's pathway is left out: players move at this reload, and their old URLs still work).
2. The player's hints (`_HLS_pathway`/`_HLS_throughput`, `_DASH_pathway`/`_DASH_throughput`, bits per
   second): a player on another pathway than the one we put first left it on its own — hls.js does
   that after a failure, and penalises it for 300 s — so we penalise it as long, too; a pathway whose
   reported throughput cannot carry the title's lowest variant is penalised likewise, when the session
   has another (hls.js's default estimate, sent before it has measured, is no evidence).
3. PATHWAY-PRIORITY: usable pathways, unsaturated before saturated (egress near capacity), penalised
   after both, each group in session order; unusable ones are left out — unless nothing is left.
4. HLS only: when a site the session uses (or the client's own) has no usable pathway but has a usable
   appliance now — a pathway's appliance drained or came back, a site added after the session began —
   steering is asked again (at most every RESTEER_EVERY_S) and each new pathway it yields is offered
   as a PATHWAY-CLONE (`new_pathways`, rendered by playback.core.manifests.pathway_clone) under a new
   id (`ams.2`); one with the same appliances as a session pathway is not offered again.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence

from playback.core.parts import PlaybackError
from playback.core.pathways import Pathway, pathway_id

PENALTY_S = 300.0  # hls.js's PATHWAY_PENALTY_DURATION_MS
HLS_DEFAULT_ESTIMATE = 500_000  # hls.js's abrEwmaDefaultEstimate: what it reports before it has measured
RESTEER_EVERY_S = 30.0
MAX_PATHWAYS = 16
MAX_APPLIANCES = 8  # per pathway, in the session URL
_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True)
class ApplianceState:
    usable: bool
    saturated: bool
    site: str | None = None


@dataclass(frozen=True)
class SessionPathway:
    id: str
    appliances: tuple[str, ...]


@dataclass(frozen=True)
class Session:
    pathways: tuple[SessionPathway, ...]
    home: str | None = None  # the client's site
    last: str | None = None  # the pathway our last answer put first
    penalties: Mapping[str, float] = field(default_factory=dict)  # pathway -> penalised until (unix time)
    resteered_at: float | None = None

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.pathways]


@dataclass(frozen=True)
class Hints:
    pathway: str | None = None  # the pathway the player is on
    throughput_bps: int | None = None


@dataclass(frozen=True)
class Verdict:
    priority: tuple[str, ...]
    penalties: Mapping[str, float]
    resteer: bool
    why: tuple[str, ...] = ()  # what moved (for the log)


# ---- the session in the URL -----------------------------------------------------------------------

def session_of(pathways: Sequence[Pathway], home: str | None = None) -> Session:
    """A new session from a play's pathways."""
    return Session(tuple(SessionPathway(p.id, tuple(sorted(p.hosts))[:MAX_APPLIANCES]) for p in pathways), home,
                   pathways[0].id if pathways else None)


def session_query(s: Session) -> tuple[tuple[str, str], ...]:
    """The session as query pairs (validated again by parse_session on the way back)."""
    query = [("pathways", ",".join(p.id if p.appliances == (p.id,) else f"{p.id}:{'~'.join(p.appliances)}"
                                   for p in s.pathways))]
    if s.home:
        query.append(("home", s.home))
    if s.last:
        query.append(("last", s.last))
    if s.penalties:
        query.append(("pen", ",".join(f"{p}:{int(until)}" for p, until in sorted(s.penalties.items()))))
    if s.resteered_at is not None:
        query.append(("rs", str(int(s.resteered_at))))
    return tuple(query)


def parse_session(query: Mapping[str, str]) -> Session:
    """The session from the steering manifest URL; PlaybackError naming what is wrong."""
    pathways = []
    for item in [p for p in query.get("pathways", "").split(",") if p][:MAX_PATHWAYS]:
        pid, sep, hosts = item.partition(":")
        appliances = tuple(h for h in hosts.split("~") if h) if sep else (pid,)
        if (not _ID.fullmatch(pid) or pathway_id(pid) != pid or not 0 < len(appliances) <= MAX_APPLIANCES
                or not all(_ID.fullmatch(a) for a in appliances)):
            raise PlaybackError("pathways: a comma-separated list of pathway ids, each with its appliances")
        pathways.append(SessionPathway(pid, appliances))
    if not pathways or len({p.id for p in pathways}) != len(pathways):
        raise PlaybackError("pathways: a comma-separated list of pathway ids, each with its appliances")
    ids = {p.id for p in pathways}
    home, last = query.get("home") or None, query.get("last") or None
    if home is not None and not _ID.fullmatch(home):
        raise PlaybackError("home: a site id")
    if last is not None and last not in ids:
        raise PlaybackError("last: one of the session's pathways")
    penalties = {}
    for item in [p for p in query.get("pen", "").split(",") if p][:MAX_PATHWAYS]:
        pid, _, until = item.partition(":")
        if pid not in ids or not until.isdigit() or len(until) > 12:
            raise PlaybackError("pen: pathway:unix-time pairs")
        penalties[pid] = float(until)
    rs = query.get("rs")
    if rs is not None and (not rs.isdigit() or len(rs) > 12):
        raise PlaybackError("rs: unix time")
    return Session(tuple(pathways), home, last, penalties, None if rs is None else float(rs))


def parse_hints(query: Mapping[str, str], dash: bool) -> Hints:
    """The player's own report; a malformed hint is ignored, not refused (players differ)."""
    prefix = "_DASH_" if dash else "_HLS_"
    pathway = query.get(prefix + "pathway")
    raw = query.get(prefix + "throughput", "")
    throughput = int(raw) if raw.isdigit() and len(raw) <= 15 else None
    if not dash and throughput == HLS_DEFAULT_ESTIMATE:
        throughput = None  # hls.js's default estimate, sent before it measured anything: no evidence
    return Hints(pathway if pathway is not None and _ID.fullmatch(pathway) else None, throughput)


# ---- deciding ---------------------------------------------------------------------------------------

def fleet_states(fleet: Mapping[str, Any], saturation: float) -> dict[str, ApplianceState]:
    """steering's GET /v1/fleet -> {appliance id: state}."""
    out = {}
    for site in fleet.get("sites", []):
        for a in site.get("appliances", []):
            usable = a.get("status") == "up" and a.get("accepting", True) and not a.get("draining", False)
            cap = a.get("capacity_bps") or 0
            saturated = bool(cap) and (a.get("egress_bps") or 0) >= saturation * cap
            out[a["id"]] = ApplianceState(bool(usable), saturated, site.get("id"))
    return out


def decide(session: Session, states: Mapping[str, ApplianceState] | None, hints: Hints, now: float,
           min_bandwidth_bps: int = 0, resteer: bool = True) -> Verdict:
    """The priority for this reload, the penalties to carry, and whether to ask steering again."""
    ids = session.ids
    penalties = {p: until for p, until in session.penalties.items() if until > now}
    why = []
    current = hints.pathway if hints.pathway in ids else None
    if current is not None and session.last is not None and current != session.last and session.last not in penalties:
        penalties[session.last] = now + PENALTY_S  # the player left it on its own: it failed there
        why.append(f"{session.last}: the player left it for {current}")
    if (current is not None and hints.throughput_bps is not None and 0 < hints.throughput_bps < min_bandwidth_bps
            and current not in penalties and any(p not in penalties and p != current for p in ids)):
        penalties[current] = now + PENALTY_S  # only when there is somewhere else to go
        why.append(f"{current}: {hints.throughput_bps} bit/s cannot carry {min_bandwidth_bps} bit/s")
    if not states:
        order = [p for p in ids if p not in penalties] + [p for p in ids if p in penalties]
        return Verdict(tuple(order), penalties, False, tuple(why))
    usable = {p.id: _usable(p, states) for p in session.pathways}
    busy = {p.id: any(states[a].saturated for a in p.appliances if a in states) for p in session.pathways}
    good = [p for p in ids if usable[p] and not busy[p] and p not in penalties]
    order = good + [p for p in ids if usable[p] and busy[p] and p not in penalties] + \
        [p for p in ids if usable[p] and p in penalties]
    why += [f"{p}: left out (an appliance is down or draining)" for p in ids if not usable[p]]
    wanted = resteer and _uncovered(session, states, {p for p in ids if usable[p]}) and (
        session.resteered_at is None or now - session.resteered_at >= RESTEER_EVERY_S)
    return Verdict(tuple(order or ids), penalties, bool(wanted), tuple(why))


def _usable(p: SessionPathway, states: Mapping[str, ApplianceState]) -> bool:
    return all(a in states and states[a].usable for a in p.appliances)


def _site(p: SessionPathway, states: Mapping[str, ApplianceState]) -> str | None:
    return next((states[a].site for a in p.appliances if a in states), None)


def _uncovered(session: Session, states: Mapping[str, ApplianceState], usable: set[str]) -> bool:
    """A site of the session (or the client's) has no usable pathway but a usable appliance. (A
    penalised or saturated pathway is no reason: steering would name the same appliances again.)"""
    sites = {_site(p, states) for p in session.pathways} | {session.home}
    covered = {_site(p, states) for p in session.pathways if p.id in usable}
    live = {s.site for s in states.values() if s.usable}
    return any(site is not None and site not in covered and site in live for site in sites)


# ---- growing the session ----------------------------------------------------------------------------

def new_pathways(session: Session, fresh: Sequence[Pathway], states: Mapping[str, ApplianceState],
                 renditions: int) -> list[Pathway]:
    """Of steering's fresh pathways (best first), those worth offering as clones: complete (every
    rendition: a clone copies its base's variants, and one it can't replace would keep the base's
    host), every appliance usable, and not the same appliances as a session pathway. Each gets a new id."""
    taken = set(session.ids)
    known = {frozenset(p.appliances) for p in session.pathways}
    out = []
    for p in fresh:
        if len(session.pathways) + len(out) >= MAX_PATHWAYS:
            break
        if p.hosts in known or len(p.urls) != renditions or not all(a in states and states[a].usable for a in p.hosts):
            continue
        base, n = (p.site or p.id)[:60], 2
        pid = pathway_id(base)
        while pid in taken:
            pid, n = pathway_id(f"{base}.{n}"), n + 1
        taken.add(pid)
        known.add(p.hosts)
        out.append(replace(p, id=pid))
    return out


def grown(session: Session, fresh: Sequence[Pathway], added: Iterable[Pathway], now: float) -> Session:
    """The session with the clones, re-ranked as steering ranks now: pathways steering gave again (by
    their appliances) and the clones in its order, then the rest in their old order."""
    by_hosts = {frozenset(p.appliances): p for p in session.pathways}
    new = {p.hosts: SessionPathway(p.id, tuple(sorted(p.hosts))[:MAX_APPLIANCES]) for p in added}
    order: list[SessionPathway] = []
    for p in fresh:
        found = by_hosts.get(p.hosts) or new.get(p.hosts)
        if found is not None and found not in order:
            order.append(found)
    order += [p for p in session.pathways if p not in order]
    order += [p for p in new.values() if p not in order]
    return replace(session, pathways=tuple(order), resteered_at=now)


def steering_manifest(priority: Sequence[str], ttl_s: int, reload_uri: str, dash: bool,
                      clones: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    body: dict[str, Any] = {"VERSION": 1, "TTL": ttl_s, "RELOAD-URI": reload_uri, "PATHWAY-PRIORITY": list(priority)}
    if clones and not dash:
        body["PATHWAY-CLONES"] = list(clones)
    if dash:  # the DASH-IF spec's name; dash.js (the reference player) reads PATHWAY-PRIORITY, so both
        body["SERVICE-LOCATION-PRIORITY"] = list(priority)
    return body


def fleet_sites(fleet: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """{base URL as an origin (scheme://host[:port]): (appliance id, site id)} of the fleet."""
    out = {}
    for site in fleet.get("sites", []):
        for a in site.get("appliances", []):
            base = str(a.get("base_url", "")).rstrip("/")
            origin = "/".join(base.split("/", 3)[:3])  # a base URL with a path still names its origin
            out[origin] = (str(a["id"]), str(site.get("id", a["id"])))
    return out


def base_urls(fleet: Mapping[str, Any]) -> dict[str, str]:
    """{base URL: appliance id} of every appliance of the fleet."""
    return {a["base_url"].rstrip("/"): a["id"] for s in fleet.get("sites", []) for a in s.get("appliances", [])}


__all__ = ["ApplianceState", "Session", "SessionPathway", "Hints", "Verdict", "session_of", "session_query",
           "parse_session", "parse_hints", "fleet_states", "decide", "new_pathways", "grown", "steering_manifest",
           "fleet_sites", "base_urls", "PENALTY_S", "RESTEER_EVERY_S"]
