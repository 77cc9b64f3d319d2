"""The appliance's heartbeat reporter: every `interval_s` it POSTs a report (contracts.heartbeat) to
every steering replica — replicas are independent, so each gets every report.

Inventory goes whole on the first report to a replica and as deltas after. One generation counter
moves on when the set changes, so the delta of a round is the same for every replica in step; a
replica that missed a round (the POST failed), that answers `need_full`, or whose acknowledged
generation is not the one sent, gets the whole set next round. Generations start at the wall clock in
milliseconds, so a restarted appliance never reuses one a replica still holds.

The daemon supplies two cheap callables: `snapshot()` (health, load, disks, popularity) and
`inventory()` (an `InventoryState`: the set of file keys and a version that changes whenever the set
does, so an unchanged set costs no diff; oca.inventory.InventoryFollower keeps it), and the key ring
(or a callable returning the current one: `KeyFile`) that signs each report
(contracts.heartbeat.sign_body).

With BGP, `routes()` (oca.bgp.table.RouteState: a version and the routes by prefix) travels the same
way with a generation of its own: whole on the first report and after a gap (`routes_need_full`, or
an acknowledged generation that is not the one sent), as deltas after (`announced`, `withdrawn`).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import AbstractSet, Any, Callable, Mapping, Sequence

import aiohttp

from contracts.heartbeat import (CONTENT_TYPE, SIGNATURE_HEADER, HealthSnapshot, Heartbeat, HeartbeatAck,
                                 HeartbeatError, InventoryUpdate, Route, RoutesUpdate, decode_ack, encode_heartbeat,
                                 sign_body)
from contracts.ids import ApplianceId, FileKey, SiteId
from contracts.keys import load_keyring
from contracts.logs import log_event
from contracts.token import Keyring
from contracts.structconf import ConfigError

__all__ = ["Reporter", "InventoryState", "HealthSnapshot", "ReplicaStatus", "KeyFile"]

log = logging.getLogger("oca.reporter")
HEARTBEAT_PATH = "/v1/heartbeat"


@dataclass(frozen=True)
class InventoryState:
    version: int  # the store's change counter: equal versions mean an equal set
    keys: AbstractSet[FileKey]


@dataclass
class ReplicaStatus:
    """The reporter's view of one steering replica (for the appliance's admin page)."""

    url: str
    need_full: bool = True
    generation_ack: int | None = None
    status: str = "unknown"  # what the replica says about this appliance
    reason: str = ""
    last_ok_at: float | None = None
    last_error: str | None = None
    failures: int = 0
    routes_need_full: bool = True
    routes_ack: int | None = None


@dataclass(frozen=True)
class _Round:
    seq: int
    health: HealthSnapshot
    generation: int
    keys: frozenset[FileKey]
    delta: InventoryUpdate
    sent_at: float
    routes: "_RoutesRound | None" = None
    encoded: dict[tuple[bool, bool], bytes] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class _RoutesRound:
    generation: int
    table: Mapping[str, Route]
    delta: RoutesUpdate


class Reporter:
    def __init__(self, appliance_id: str, site: str, steering_urls: Sequence[str], interval_s: float,
                 snapshot: Callable[[], HealthSnapshot], inventory: Callable[[], InventoryState], *,
                 keys: Keyring | Callable[[], Keyring] | None = None,
                 timeout_s: float | None = None, max_popularity: int = 10_000,
                 clock: Callable[[], float] = time.time, routes: Callable[[], Any] | None = None) -> None:
        if not steering_urls:
            raise ValueError("steering_urls: at least one steering replica")
        if interval_s <= 0:
            raise ValueError("interval_s: must be positive")
        self.appliance_id = ApplianceId(appliance_id)
        self.site = SiteId(site)
        self.interval_s = interval_s
        self.timeout_s = timeout_s if timeout_s is not None else max(1.0, min(interval_s, 10.0))
        self.max_popularity = max_popularity
        self._snapshot, self._inventory, self._clock = snapshot, inventory, clock
        self._keyring = keys  # a callable follows key rotation (the daemon reloads its key file)
        self.replicas = {url.rstrip("/"): ReplicaStatus(url.rstrip("/")) for url in steering_urls}
        self.boot = secrets.token_hex(8)  # seq counts within this run: steering refuses replays
        self._seq = 0
        self._generation = 0
        self._keys: frozenset[FileKey] | None = None
        self._version: int | None = None
        # routes heard over BGP (None: this appliance runs no BGP)
        self._routes_source = routes
        self._routes_generation = 0
        self._routes: Mapping[str, Route] | None = None
        self._routes_version: int | None = None

    def status(self) -> list[ReplicaStatus]:
        return [replace(r) for r in self.replicas.values()]

    async def run(self, stop_event: asyncio.Event) -> None:
        """Report every interval until `stop_event` is set; one report is in flight at a time."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as session:
            loop = asyncio.get_running_loop()
            next_at = loop.time()
            while not stop_event.is_set():
                await self.report_once(session)
                next_at = max(next_at + self.interval_s, loop.time())  # no burst to catch up
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_event.wait(), timeout=next_at - loop.time())

    async def report_once(self, session: aiohttp.ClientSession) -> None:
        """One round: measure, then POST to every replica concurrently."""
        round_ = self._next_round()
        await asyncio.gather(*(self._post(session, r, round_) for r in self.replicas.values()))

    # ---- one round ----------------------------------------------------------------------------

    def _next_round(self) -> _Round:
        self._seq += 1
        health = self._snapshot()
        if len(health.popularity) > self.max_popularity:  # the hottest files are what steering needs
            top = sorted(health.popularity.items(), key=lambda kv: kv[1][1], reverse=True)
            health = replace(health, popularity=dict(top[: self.max_popularity]))
        delta = self._advance_inventory()
        assert self._keys is not None
        return _Round(self._seq, health, self._generation, self._keys, delta, self._clock(), self._advance_routes())

    def _advance_routes(self) -> _RoutesRound | None:
        if self._routes_source is None:
            return None
        state = self._routes_source()
        old = self._routes
        if old is None:
            self._routes_generation = int(self._clock() * 1000)
        elif state.version != self._routes_version:
            new = state.routes
            announced = tuple(r for p, r in new.items() if old.get(p) is not r and old.get(p) != r)
            withdrawn = tuple(p for p in old if p not in new)
            if announced or withdrawn:
                self._routes_generation += 1
                self._routes, self._routes_version = new, state.version
                return _RoutesRound(self._routes_generation, new, RoutesUpdate(
                    self._routes_generation, False, announced, withdrawn, base=self._routes_generation - 1))
        self._routes, self._routes_version = state.routes, state.version
        gen = self._routes_generation
        return _RoutesRound(gen, self._routes, RoutesUpdate(gen, False, base=gen))

    def _advance_inventory(self) -> InventoryUpdate:
        state = self._inventory()
        if self._keys is None:
            self._generation = int(self._clock() * 1000)
            self._keys, self._version = frozenset(state.keys), state.version
            return self._unchanged()
        if state.version == self._version:
            return self._unchanged()
        keys = state.keys if isinstance(state.keys, frozenset) else frozenset(state.keys)
        added, removed = keys - self._keys, self._keys - keys
        self._keys, self._version = keys, state.version
        if not added and not removed:
            return self._unchanged()
        self._generation += 1
        return InventoryUpdate(generation=self._generation, full=False, added=tuple(added),
                               removed=tuple(removed), base=self._generation - 1)

    def _unchanged(self) -> InventoryUpdate:
        return InventoryUpdate(generation=self._generation, full=False, base=self._generation)

    def _body(self, round_: _Round, full: bool, routes_full: bool) -> bytes:
        body = round_.encoded.get((full, routes_full))
        if body is None:
            inventory = (InventoryUpdate(generation=round_.generation, full=True, added=tuple(round_.keys))
                         if full else round_.delta)
            r = round_.routes
            routes = None if r is None else (
                RoutesUpdate(r.generation, True, tuple(r.table.values())) if routes_full else r.delta)
            hb = Heartbeat(self.appliance_id, self.site, round_.seq, round_.sent_at, round_.health, inventory,
                           boot=self.boot, routes=routes)
            body = round_.encoded[(full, routes_full)] = encode_heartbeat(hb)
        return body

    async def _post(self, session: aiohttp.ClientSession, replica: ReplicaStatus, round_: _Round) -> None:
        body = self._body(round_, replica.need_full, replica.routes_need_full)
        headers = {"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE}
        try:
            if self._keyring is not None:  # inside the try: an unreadable key file fails this round only
                ring = self._keyring() if callable(self._keyring) else self._keyring
                headers[SIGNATURE_HEADER] = sign_body(body, ring, self.appliance_id)
            async with session.post(replica.url + HEARTBEAT_PATH, data=body, headers=headers) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise _Refused(f"HTTP {resp.status}: {raw[:200]!r}")
                ack = decode_ack(raw, resp.headers.get("Content-Type", CONTENT_TYPE))
        except (aiohttp.ClientError, TimeoutError, HeartbeatError, _Refused, OSError, ConfigError) as exc:
            self._failed(replica, f"{type(exc).__name__}: {exc}")
            return
        self._acked(replica, ack, sent=round_.generation,
                    routes_sent=round_.routes.generation if round_.routes is not None else None)

    def _acked(self, replica: ReplicaStatus, ack: HeartbeatAck, sent: int, routes_sent: int | None = None) -> None:
        if replica.last_error is not None:
            log.info("steering replica reachable again", extra={"fields": {"replica": replica.url}})
        replica.need_full = ack.need_full or ack.generation_ack != sent
        replica.generation_ack = ack.generation_ack
        if routes_sent is not None:
            replica.routes_need_full = ack.routes_need_full or ack.routes_ack != routes_sent
            replica.routes_ack = ack.routes_ack
        replica.status, replica.reason = ack.status, ack.reason
        replica.last_ok_at, replica.last_error, replica.failures = self._clock(), None, 0

    def _failed(self, replica: ReplicaStatus, error: str) -> None:
        if replica.failures == 0:
            log.warning("heartbeat to steering replica failed", extra={"fields": {
                "replica": replica.url, "error": error}})
        replica.need_full = True  # it may have lost this round's delta: resend the whole set
        replica.routes_need_full = True
        replica.last_error, replica.failures = error, replica.failures + 1


class _Refused(Exception):
    pass


class KeyFile:
    """The appliance's key file as the reporter signs with it: re-read when it changes (rotation without
    restart). A file caught half rewritten (rotation done with a plain editor) keeps the last good ring
    until it parses; with no good ring yet, the error goes to the caller (that round fails)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys: tuple[float, Keyring] | None = None  # (mtime, ring) of the last good read

    def __call__(self) -> Keyring:
        try:
            mtime = os.stat(self.path).st_mtime
            if self._keys is None or self._keys[0] != mtime:
                self._keys = (mtime, load_keyring(self.path))
        except (OSError, ConfigError) as exc:
            if self._keys is None:
                raise
            log_event(log, "keys-reload-failed", logging.WARNING, error=str(exc), keeping="last good keys")
        return self._keys[1]
