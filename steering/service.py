"""One steering replica: the loaded fleet, keys and GeoIP database, the live fleet state and the
metrics, behind plain methods the HTTP handlers call. File reading happens in `load_*` (the server
runs them off the event loop); swapping in what they read is a few reference assignments on the
loop, so a reload never drops or half-serves a request.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from msgspec.structs import replace

from contracts.heartbeat import (HeartbeatAck, HeartbeatError, HeartbeatUnauthorized, ReportSequence, check_fresh,
                                 decode_heartbeat, verify_body)
from contracts.ids import FileKey, validate_file_key
from contracts.callers import Caller, parse_callers
from contracts.keys import DerivedKeys, load_keyring
from contracts.structconf import read_toml
from contracts.token import Keyring
from contracts.withdrawals import EMPTY as EMPTY_WITHDRAWALS, Withdrawals
from steering import config as steering_config
from steering.config import SteeringConfig
from contracts.demandtable import DemandTable
from steering.core.fleet import Fleet
from steering.core.live import FleetState, Ingested
from steering.core.locate import LocateMethod, Localisation, Localiser
from steering.core.prefixes import ClientAddress, parse_address, token_prefix
from steering.core.admission import MissLedger
from steering.core.rank import Decision, Outcome, can_pull, rank
from steering.bgpview import BgpCollector, appliance_bgp, site_bgp
from steering.decisionlog import DecisionLog
from steering.fleetconf import FleetInfo
from steering.fleetfetch import read_configured
from steering.geoip import GeoDatabase
from steering.metrics import SteeringMetrics

log = logging.getLogger("steering")


class BadRequest(ValueError):
    status_hint = 400
    reason = "bad-request"


class Withdrawn(BadRequest):
    """A file of a withdrawn title or version (steering.withdrawals): gone for good, until an undo."""
    status_hint = 410
    reason = "withdrawn"


@dataclass(frozen=True)
class Loaded:
    fleet: Fleet
    keys: Keyring  # the fleet's master keys: nothing signed with them leaves steering as such
    geo: GeoDatabase | None
    callers: Mapping[str, Caller] = field(default_factory=dict)  # by token hash (contracts.callers)
    fleet_info: FleetInfo = field(default_factory=FleetInfo)  # the fleet's source, revision, warnings, skips
    derived: DerivedKeys = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "derived", DerivedKeys(self.keys))

    def appliance_keys(self, appliance: str) -> Keyring | None:
        """The keys derived for a fleet appliance (None for an id the fleet does not name)."""
        return self.derived.for_holder(appliance) if appliance in self.fleet.appliances else None


@dataclass(frozen=True)
class SteerAnswer:
    file: FileKey
    locations: tuple[str, ...]
    decision: Decision


def load_all(config: SteeringConfig, previous_fleet: FleetInfo | None = None) -> Loaded:
    """Read every file the config names (blocking); raises ConfigError naming what is wrong.
    `previous_fleet` lends a bad coverage zone its last good version (steering.czf)."""
    fleet, info = read_configured(config, previous_fleet)
    if config.default_site not in fleet.sites:
        raise steering_config.ConfigError(
            f"steering.default_site: {config.default_site!r} is not a site of {config.fleet_file}")
    geo = GeoDatabase(config.geo.database) if config.geo.database else None
    return Loaded(fleet=fleet, keys=load_keyring(config.key_file), geo=geo, callers=load_callers(config.callers_file),
                  fleet_info=info)


def load_callers(path: Path | None) -> dict[str, Caller]:
    """The callers file (none configured: no bearer token is accepted, only appliances' signatures)."""
    return parse_callers(read_toml(path), where=str(path)) if path is not None else {}


def file_signature(path: Path | None) -> tuple[int, int, int] | None:
    """What changes when a file is rewritten or replaced (mtime, size, inode); None if unreadable."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class Replica:
    def __init__(self, config: SteeringConfig, loaded: Loaded,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.clock, self.wall = clock, wall
        self.config = config
        self.loaded = loaded
        self.state = FleetState(loaded.fleet, config.health)
        self.localiser = self._localiser(config, loaded.fleet)
        self.draining = False
        self.started_at = wall()
        self.withdrawals: Withdrawals = EMPTY_WITHDRAWALS  # swapped whole by steering.withdrawals' poll
        self._mismatched: set[str] = set()
        self._pair_text: dict[tuple[LocateMethod, Outcome], tuple[str, str]] = {}  # for the decision log
        self.sequence = ReportSequence()  # heartbeat replay protection
        self.decisions = DecisionLog()  # the server flushes it
        # demand per (client site, file), counted by every decision; steering.demand saves and serves it
        self.demand = DemandTable(config.demand.half_life_s, config.demand.max_entries, wall())
        self.misses = self._ledger(config)
        self.metrics = SteeringMetrics(self)  # reads the above at scrape time; one registry per replica
        self.metrics.registry.register(BgpCollector(self))

    @staticmethod
    def _ledger(config: SteeringConfig) -> MissLedger:
        p = config.pull_through
        return MissLedger(p.policy, p.hold_s, p.max_entries)

    def _localiser(self, config: SteeringConfig, fleet: Fleet) -> Localiser:
        t = config.tokens  # BGP-learned routes and the live set are the fleet state's, read in place
        return Localiser(fleet, config.default_site, config.geo.slack_km, t.client_prefix_v4, t.client_prefix_v6,
                         routes=self.state.routes, live=self.state.view.up)

    # ---- reloads ------------------------------------------------------------------------------

    def adopt(self, config: SteeringConfig, loaded: Loaded) -> None:
        """Switch to a reloaded config and files (on the loop; everything was read already)."""
        if (config.server.listen, config.server.port) != (self.config.server.listen, self.config.server.port):
            log.warning("listen-change-needs-restart", extra={"fields": {
                "listen": self.config.server.listen, "port": self.config.server.port}})
            config = replace(config, server=replace(config.server, listen=self.config.server.listen,
                                                    port=self.config.server.port))
        if config.tls != self.config.tls:  # the listener keeps re-reading the files it started with
            running = self.config.tls
            log.warning("tls-change-needs-restart", extra={"fields": {
                "cert_file": str(running.cert_file) if running else None,
                "key_file": str(running.key_file) if running else None}})
            config = replace(config, tls=running)
        old_geo = self.loaded.geo
        self.state.reconfigure(loaded.fleet, config.health)
        self.localiser = self._localiser(config, loaded.fleet)
        self.demand.reconfigure(config.demand.half_life_s, config.demand.max_entries, self.wall())
        if config.pull_through != self.config.pull_through:
            self.misses = self._ledger(config)
        self.config, self.loaded = config, loaded
        if old_geo is not None and old_geo is not loaded.geo:
            old_geo.close()

    # ---- steering -----------------------------------------------------------------------------

    def steer(self, files: Sequence[str], client: str, ttl_s: int | None = None,
              request_id: str | None = None) -> tuple[int, list[SteerAnswer]]:
        """Rank and sign for every file; returns (expires_at, answers). One localisation per call.
        A `request_id` rides along in every URL (`rid=`, outside the signature) and in the decision
        log, so an appliance's access log line ties back to this decision and to the playback answer."""
        tokens = self.config.tokens
        ttl = tokens.ttl_s if ttl_s is None else ttl_s
        if not 0 < ttl <= tokens.max_ttl_s:
            raise BadRequest(f"ttl_s: must be 1..{tokens.max_ttl_s}")
        keys = [validate_file_key(f) for f in files]
        if self.withdrawals:  # one dict lookup or two per key, and only while something is withdrawn
            self._refuse_withdrawn(keys)
        addr = parse_address(client)
        loc = self.locate(addr)
        prefix = token_prefix(addr, tokens.client_prefix_v4, tokens.client_prefix_v6)
        now = self.wall()
        expires_at = int(now) + ttl
        # Demand: one play per call, counted in the client's site, hits and misses alike. A POST names
        # one title's renditions, of which the player fetches about one: each file gets 1/len(files)
        # of the play as its `requests`. Steering knows no sizes, so `bytes` stays 0 — the planner
        # then reads requests as plays (fill.service.demand_popularity).
        self.demand.add(loc.order.sites[0], keys, 1.0 / len(keys), 0.0, now)
        answers = []
        rid = f"&rid={request_id}" if request_id is not None else ""
        derived, bound = self.loaded.derived, str(prefix)
        pull = self.config.pull_through.enabled
        for key in keys:
            decision = rank(loc, self.state.fleet, self.state.view, key, self.config.ranking)
            if (pull and decision.outcome is Outcome.CONTENT_MISS
                    and can_pull(self.state.fleet, self.state.view, decision.site)
                    and self.misses.miss(decision.site, key, now)):
                decision = rank(loc, self.state.fleet, self.state.view, key, self.config.ranking, pull=True)
            # Each appliance's URL is signed with the keys derived for it: a URL (or a stolen
            # appliance's keys) opens that appliance's copy and no other.
            path = "/" + key
            urls = tuple(c.appliance.base_url + derived.signer(c.appliance.id).sign(path, expires_at, bound) + rid
                         for c in decision.candidates)
            self._count(decision, key, prefix, request_id)
            answers.append(SteerAnswer(key, urls, decision))
        return expires_at, answers

    def _refuse_withdrawn(self, keys: Sequence[FileKey]) -> None:
        gone = [(k, e) for k in keys if (e := self.withdrawals.covers(k)) is not None]
        if gone:
            key, e = gone[0]
            more = f" (and {len(gone) - 1} more files)" if len(gone) > 1 else ""
            raise Withdrawn(f"{key}{more}: {e.target} was withdrawn at {e.at:.0f} by {e.by}: {e.reason}")

    def route_of(self, client: str) -> dict[str, Any] | None:
        """The prefix (static or BGP-learned, with its AS path and MED) that located `client`."""
        return self.localiser.route_of(parse_address(client))

    def locate(self, addr: ClientAddress) -> Localisation:
        loc = self.localiser.by_prefix(addr)
        if loc is not None:
            return loc
        geo = self.loaded.geo
        point = geo.point(addr.text) if geo is not None else None
        if point is not None:
            return self.localiser.by_point(addr, point)
        return self.localiser.by_default()

    def _count(self, decision: Decision, key: FileKey, prefix: Any, request_id: str | None = None) -> None:
        pair = (decision.method, decision.outcome)  # str enums: hashed in C, named at scrape time
        decided = self.metrics.decisions
        decided[pair] = decided.get(pair, 0) + 1
        if self.config.server.log_decisions:
            text = self._pair_text.get(pair)
            if text is None:  # an enum's .value is a Python-level property: read it once per pair
                text = self._pair_text[pair] = (pair[0].value, pair[1].value)
            first = decision.candidates[0].appliance.id if decision.candidates else None
            self.decisions.add(key, str(prefix), text[0], text[1], decision.site, first, len(decision.candidates),
                               request_id)

    # ---- heartbeats ---------------------------------------------------------------------------

    def heartbeat(self, raw: bytes, signature: str | None = None) -> HeartbeatAck:
        """Authenticate (unless turned off), decode, check freshness and ingest one report."""
        server = self.config.server
        try:
            if server.heartbeat_auth:
                signer, _ = verify_body(raw, signature, self.loaded.appliance_keys)
            hb = decode_heartbeat(raw)
            if server.heartbeat_auth:
                if hb.appliance_id != signer:
                    raise HeartbeatUnauthorized(f"appliance_id: {hb.appliance_id!r} reported with {signer!r}'s keys")
                check_fresh(hb, self.wall(), server.heartbeat_max_skew_s)
                self.sequence.accept(hb.appliance_id, hb.boot, hb.seq)
            got = self.state.ingest(hb, self.clock())
        except HeartbeatError as exc:  # a refused report; anything else is a bug and not counted here
            self.metrics.heartbeats.labels(getattr(exc, "reason", "invalid")).inc()
            raise
        self.metrics.heartbeats.labels("ok").inc()
        self._note(hb.appliance_id, got)
        return got.ack

    def _note(self, appliance: str, got: Ingested) -> None:
        self.metrics.inventory_updates.labels(got.inventory.verdict.value).inc()
        if got.site_mismatch and appliance not in self._mismatched:
            self._mismatched.add(appliance)  # once, not every report
            log.warning("appliance-site-mismatch", extra={"fields": {"appliance": appliance}})
        if got.transition is not None:
            self._transition(got.transition)

    def tick(self) -> None:
        for transition in self.state.tick(self.clock()):
            self._transition(transition)

    def _transition(self, t: Any) -> None:
        self.metrics.health_transitions.labels(t.after.value, t.reason).inc()
        log.info("appliance-status", extra={"fields": {
            "appliance": t.appliance, "from": t.before.value, "to": t.after.value, "reason": t.reason}})

    # ---- views --------------------------------------------------------------------------------

    def fleet_json(self) -> dict[str, Any]:
        now, state = self.clock(), self.state
        sites = []
        for site in state.fleet.sites.values():
            sites.append({"id": site.id, "latitude": site.latitude, "longitude": site.longitude,
                          "capacity_bps": site.capacity_bps, "bgp": site_bgp(state, site),
                          "appliances": [self._appliance_json(a, now) for a in site.appliances]})
        info = self.loaded.fleet_info
        return {"generated_at": self.wall(), "appliances": len(state.fleet.appliances),
                "up": state.up_count(), "default_site": self.config.default_site, "revision": info.revision,
                "fleet_source": info.public(), "sites": sites}

    def _appliance_json(self, spec: Any, now: float) -> dict[str, Any]:
        health = self.state.health[spec.id]
        out: dict[str, Any] = {
            "id": spec.id, "base_url": spec.base_url, "capacity_bps": spec.capacity_bps,
            "status": health.status.value, "reason": health.reason,
            "status_age_s": round(now - health.changed_at, 3) if health.transitions else None,
            "transitions": health.transitions,  # a flapping appliance shows here first
            "inventory": {"generation": self.state.inventory.generation(spec.id),
                          "files": self.state.inventory.count(spec.id)},
            "bgp": appliance_bgp(self.state, spec.id),
        }
        report = self.state.reports.get(spec.id)
        if report is not None:
            h = report.health
            out.update(last_report_age_s=round(now - report.received_at, 3), seq=report.seq,
                       reported_site=report.site, accepting=h.accepting, draining=h.draining,
                       drain_reason=h.drain_reason,
                       degraded=list(h.degraded), pull_through=h.pull_through,
                       egress_bps=h.egress_bps, load={"loadavg": h.load.loadavg,
                                                      "open_connections": h.load.open_connections},
                       disks=[{"path": d.path, "tier": d.tier, "state": d.state.value,
                               "total_bytes": d.total_bytes, "free_bytes": d.free_bytes, "files": d.files}
                              for d in h.disks])
        return out

    def health_json(self) -> dict[str, Any]:
        return {"status": "draining" if self.draining else "ok", "sites": len(self.state.fleet.sites),
                "appliances": len(self.state.fleet.appliances), "up": self.state.up_count(),
                "signing_key": self.loaded.keys.signing_id}


def dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"))
