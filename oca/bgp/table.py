"""The routes the appliance holds, per BGP session, and the best of them per prefix (pure: the shell
feeds it ExaBGP's events with a wall-clock `now` and reads verdicts back).

Each session keeps what it accepted (oca.bgp.policy judges every announcement; the cap is applied
here). A session that goes down keeps its routes for the hold time, then they are withdrawn: a
router restarting or a flap shorter than that moves no client. When a session comes up again, what
it held is marked stale; routes announced again are fresh, and the stale rest is withdrawn at the
End-of-RIB marker or, without one, once the hold time has passed (graceful restart's rule,
RFC 4724). `expire(now)` applies the timers; the shell calls it every second.

The table's product is `best()`: per prefix, the best route over every session (shorter AS path,
then lower MED, then higher local-pref, then the session listed first), versioned: `version` moves
on whenever `best()` changes, and equal routes keep their identity, so a reporter diffing two
versions compares references first (oca.reporter sends them to steering as deltas).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from contracts.heartbeat import BgpSession, Route
from oca.bgp.messages import Attributes
from oca.bgp.policy import Policy, Refusal, normalise


@dataclass(frozen=True)
class Peer:
    name: str
    address: str
    peer_as: int


@dataclass
class Session:
    peer: Peer
    state: str = "idle"  # idle | connect | up | down
    since: float = 0.0
    routes: dict[str, Route] = field(default_factory=dict)
    stale: set[str] = field(default_factory=set)  # held from before the last start of the session
    stale_until: float | None = None
    down_at: float | None = None
    refused: dict[Refusal, int] = field(default_factory=dict)  # since the appliance started
    updates: int = 0
    last_update_at: float | None = None
    last_error: str = ""

    def public(self) -> BgpSession:
        return BgpSession(peer=self.peer.address, peer_as=self.peer.peer_as, state=self.state, since=self.since,
                          prefixes=len(self.routes), refused=sum(self.refused.values()),
                          last_update_at=self.last_update_at)


@dataclass
class UpdateResult:
    accepted: int = 0
    withdrawn: int = 0
    refused: dict[Refusal, list[str]] = field(default_factory=dict)  # reason -> prefixes (a few kept)

    def refuse(self, reason: Refusal, prefix: str) -> None:
        examples = self.refused.setdefault(reason, [])
        if len(examples) < 3:
            examples.append(prefix)


@dataclass(frozen=True)
class RouteState:
    """What the reporter reads: a version that changes whenever the routes do, and the routes."""

    version: int
    routes: Mapping[str, Route]


class RouteTable:
    def __init__(self, peers: Iterable[Peer], policy: Policy, hold_time_s: float, now: float) -> None:
        # configuration
        self.policy = policy
        self.hold_time_s = hold_time_s
        # state
        self.sessions: dict[str, Session] = {}  # by peer address, in config order
        self._best: dict[str, Route] = {}
        self.version = 0
        self._snapshot = RouteState(0, {})
        self.reconfigure(peers, policy, hold_time_s, now)

    # ---- events -------------------------------------------------------------------------------
    def on_state(self, address: str, state: str, now: float, reason: str = "") -> tuple[str, str] | None:
        """ExaBGP's connected / up / down; returns (before, after) when the state changed."""
        s = self.sessions.get(address)
        if s is None:
            return None
        new = {"connected": "connect", "up": "up", "down": "down"}.get(state)
        if new is None or new == s.state or (new == "connect" and s.state == "down"):
            return None  # a reconnect attempt of a down session leaves it down (its timer runs on)
        before, s.state, s.since = s.state, new, now
        if new == "up":
            s.down_at = None
            s.stale = set(s.routes)
            s.stale_until = now + self.hold_time_s if s.stale else None
            s.last_error = ""
        elif new == "down":
            s.down_at = now
            s.last_error = reason or s.last_error
        return before, new

    def on_update(self, address: str, attrs: Attributes, announced: Iterable[str], withdrawn: Iterable[str],
                  now: float) -> UpdateResult:
        result = UpdateResult()
        s = self.sessions.get(address)
        if s is None:
            return result
        s.updates += 1
        s.last_update_at = now
        for prefix in withdrawn:
            net = normalise(prefix)
            if net is not None and self._drop(s, str(net)):
                result.withdrawn += 1
        judge, cap = self.policy.judge, self.policy.max_prefixes
        template: Route | None = None
        for prefix in announced:
            text, refusal = judge(prefix, attrs.as_path, attrs.as_set)
            if refusal is None and text not in s.routes and len(s.routes) >= cap:
                refusal = Refusal.OVER_LIMIT
            if refusal is not None:
                s.refused[refusal] = s.refused.get(refusal, 0) + 1
                result.refuse(refusal, text)
                if self._drop(s, text):  # treat-as-withdraw
                    result.withdrawn += 1
                continue
            if template is None:
                template = Route("", attrs.as_path, attrs.med, attrs.local_pref, attrs.communities)
            self._put(s, Route(text, template.as_path, template.med, template.local_pref, template.communities))
            result.accepted += 1
        return result

    def on_end_of_rib(self, address: str) -> int:
        """The session has sent everything: what is still stale was not announced again."""
        s = self.sessions.get(address)
        return self._flush_stale(s) if s is not None else 0

    def expire(self, now: float) -> list[tuple[str, int]]:
        """Apply the hold timers; returns (peer, routes withdrawn) for each session that lost some."""
        flushed = []
        for s in self.sessions.values():
            n = 0
            if s.down_at is not None and now - s.down_at >= self.hold_time_s and s.routes:
                s.stale = set(s.routes)
                n = self._flush_stale(s)
            elif s.stale_until is not None and now >= s.stale_until:
                n = self._flush_stale(s)
            if n:
                flushed.append((s.peer.name, n))
        return flushed

    def all_down(self, now: float, reason: str) -> None:
        """The speaker is gone (ExaBGP exited): every session is down from now."""
        for address, s in self.sessions.items():
            if s.state != "down":
                self.on_state(address, "down", now, reason)

    def reconfigure(self, peers: Iterable[Peer], policy: Policy, hold_time_s: float, now: float) -> None:
        """Adopt a new peer list and policy: removed peers lose their routes at once, kept ones keep
        theirs minus what the new policy refuses."""
        self.policy, self.hold_time_s = policy, hold_time_s
        wanted = {p.address: p for p in peers}
        for address in [a for a in self.sessions if a not in wanted]:
            s = self.sessions.pop(address)
            for prefix in list(s.routes):
                s.routes.pop(prefix)
                self._rebest(prefix)
        fresh: dict[str, Session] = {}
        for address, peer in wanted.items():
            s = self.sessions.get(address) or Session(peer, since=now)
            s.peer = peer
            fresh[address] = s
            for prefix, route in list(s.routes.items()):
                if policy.judge(prefix, route.as_path)[1] is not None:
                    self._drop(s, prefix)
        self.sessions = fresh

    # ---- reading ------------------------------------------------------------------------------
    def best(self) -> RouteState:
        if self._snapshot.version != self.version:
            self._snapshot = RouteState(self.version, dict(self._best))
        return self._snapshot

    def public(self) -> list[BgpSession]:
        return [s.public() for s in self.sessions.values()]

    # ---- inside -------------------------------------------------------------------------------
    def _put(self, s: Session, route: Route) -> None:
        held = s.routes.get(route.prefix)
        s.stale.discard(route.prefix)
        if held == route:
            return  # the same route again: keep the object (and the version)
        s.routes[route.prefix] = route
        self._rebest(route.prefix)

    def _drop(self, s: Session, prefix: str) -> bool:
        s.stale.discard(prefix)
        if s.routes.pop(prefix, None) is None:
            return False
        self._rebest(prefix)
        return True

    def _flush_stale(self, s: Session) -> int:
        stale, s.stale, s.stale_until = s.stale, set(), None
        n = 0
        for prefix in stale:
            if s.routes.pop(prefix, None) is not None:
                self._rebest(prefix)
                n += 1
        return n

    def _rebest(self, prefix: str) -> None:
        best: Route | None = None
        key: tuple[int, int, int, int] | None = None
        for i, s in enumerate(self.sessions.values()):
            r = s.routes.get(prefix)
            if r is not None:
                k = (len(r.as_path), r.med or 0, -(r.local_pref if r.local_pref is not None else 100), i)
                if key is None or k < key:
                    best, key = r, k
        if best is None:
            if self._best.pop(prefix, None) is not None:
                self.version += 1
        elif self._best.get(prefix) is not best:
            self._best[prefix] = best
            self.version += 1


__all__ = ["Peer", "RouteState", "RouteTable", "Session", "UpdateResult"]
