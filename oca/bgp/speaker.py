"""The appliance's BGP speaker (the shell around oca.bgp.table): ExaBGP as a child process, its JSON
messages read from a FIFO (oca.bgp.exaconf says why a FIFO) into the RouteTable, and the table shown
on /v1/health, /v1/bgp, /metrics and in the heartbeats.

Two supervised tasks of the daemon (`start`): "bgp" runs ExaBGP — an exit is a failure, logged,
counted and restarted after the supervisor's backoff, and every session counts as down meanwhile (its
routes are held for the hold time) — and "bgp-timers" applies the hold timers every second and notices
a reloaded `[bgp]`, which restarts ExaBGP with the new peers. ExaBGP dies with the supervisor
(PR_SET_PDEATHSIG) and its relay with ExaBGP (end of its input). Reading yields to the event loop
every few hundred lines, so a flood of routes never starves the admin endpoints or the reporter.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from contracts.logs import log_event
from contracts.supervise import TaskSupervisor
from oca.bgp import exaconf
from oca.bgp.config import BgpConfig
from oca.bgp.messages import BadMessage, EndOfRib, Notification, StateEvent, UpdateEvent, parse_message
from oca.bgp.policy import Policy
from oca.bgp.table import Peer, RouteState, RouteTable, UpdateResult

log = logging.getLogger("oca.bgp")
YIELD_EVERY = 200  # lines read between two yields to the event loop
LOG_EVERY_S = 60.0  # a refusal reason is logged at most this often per session (all are counted)
STOP_TIMEOUT_S = 5.0
_BANNER = ("Thank you for using ExaBGP", "environment file missing", '.env"', "(main, ")  # start-up chatter
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child between fork and exec only calls it


class SpeakerExited(RuntimeError):
    pass


def start(tasks: TaskSupervisor, config: Callable[[], BgpConfig | None], run_dir: Path) -> "Speaker":
    """The speaker for the daemon's `[bgp]`, its two tasks started under `tasks`."""
    speaker = Speaker(config, run_dir)
    tasks.spawn("bgp", speaker.run)
    tasks.every("bgp-timers", 1.0, speaker.tick)
    return speaker


def policy_of(cfg: BgpConfig) -> Policy:
    return Policy(cfg.local_as, cfg.max_prefixes, cfg.max_as_path_length, cfg.min_prefix_length_v4,
                  cfg.min_prefix_length_v6, cfg.refuse)


def peers_of(cfg: BgpConfig | None) -> list[Peer]:
    return [Peer(p.name, p.address, p.peer_as) for p in cfg.peers] if cfg is not None else []


class Speaker:
    def __init__(self, config: Callable[[], BgpConfig | None], run_dir: Path,
                 clock: Callable[[], float] = time.time) -> None:
        # configuration
        self._config = config
        self.dir = run_dir / "bgp"
        self.clock = clock
        # state
        cfg = config()
        self.running: BgpConfig | None = cfg  # what ExaBGP was last started with
        self.table = RouteTable(peers_of(cfg), policy_of(cfg) if cfg else Policy(0), cfg.hold_time_s if cfg else 90,
                                clock())
        self.pid: int | None = None
        self.starts = 0
        self.bad_messages = 0
        self._logged: dict[tuple[str, str], float] = {}  # (peer, reason) -> when last logged
        self._reconfigure = asyncio.Event()
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))

    # ---- what the rest of the appliance reads -------------------------------------------------
    def routes(self) -> RouteState:
        return self.table.best()

    def routes_json(self) -> list[dict[str, Any]]:
        """The best route per prefix and the session it came from (for /v1/bgp?routes=1, `oca bgp routes`)."""
        by_route = {id(r): s.peer.name for s in self.table.sessions.values() for r in s.routes.values()}
        return [{"prefix": p, "as_path": list(r.as_path), "med": r.med, "local_pref": r.local_pref,
                 "communities": list(r.communities), "from": by_route.get(id(r))}
                for p, r in sorted(self.table.best().routes.items())]

    def health(self) -> dict[str, Any]:
        now, cfg = self.clock(), self.running
        sessions = []
        for s in self.table.sessions.values():
            sessions.append({
                "name": s.peer.name, "peer": s.peer.address, "peer_as": s.peer.peer_as, "state": s.state,
                "since": s.since, "for_s": round(now - s.since, 1), "prefixes": len(s.routes), "stale": len(s.stale),
                "refused": {r.value: n for r, n in s.refused.items()}, "updates": s.updates,
                "last_update_at": s.last_update_at, "last_error": s.last_error,
                "withdraw_in_s": (round(max(0.0, s.down_at + self.table.hold_time_s - now), 1)
                                  if s.down_at is not None and s.routes else None)})
        return {"local_as": cfg.local_as if cfg else None, "router_id": cfg.router_id if cfg else None,
                "hold_time_s": self.table.hold_time_s, "speaker": {"pid": self.pid, "starts": self.starts},
                "prefixes": len(self.table.best().routes), "bad_messages": self.bad_messages, "sessions": sessions}

    # ---- tasks --------------------------------------------------------------------------------
    def tick(self) -> None:
        for peer, n in self.table.expire(self.clock()):
            log_event(log, "bgp-routes-expired", logging.WARNING, peer=peer, withdrawn=n,
                      hold_time_s=self.table.hold_time_s)
        if self._config() != self.running:
            self._reconfigure.set()

    async def run(self) -> None:
        while True:
            await self._run_once()

    async def _run_once(self) -> None:
        self._reconfigure.clear()
        cfg = self.running = self._config()
        self.table.reconfigure(peers_of(cfg), policy_of(cfg) if cfg else self.table.policy,
                               cfg.hold_time_s if cfg else self.table.hold_time_s, self.clock())
        if cfg is None:  # [bgp] removed by a reload: nothing to run until it comes back
            await self._reconfigure.wait()
            return
        async with self._fifo() as (fifo, feed):
            conf = self.dir / "exabgp.conf"
            conf.write_text(exaconf.render(cfg, fifo))
            proc = await asyncio.create_subprocess_exec(
                str(_exabgp(cfg)), str(conf), env={**os.environ, **exaconf.environment()}, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, preexec_fn=_die_with_parent)
            self.pid, self.starts = proc.pid, self.starts + 1
            log_event(log, "bgp-speaker-started", pid=proc.pid, peers=[p.name for p in cfg.peers])
            waits = [asyncio.ensure_future(c) for c in (self._feed(feed), self._relay_log(proc), proc.wait(),
                                                         self._reconfigure.wait())]
            try:
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
                await _stop(proc)
                self.pid = None
                self.table.all_down(self.clock(), "speaker stopped")
        for task in done:  # a reader that failed is a bug: its traceback, not "exabgp exited"
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        if not self._reconfigure.is_set():
            raise SpeakerExited(f"exabgp exited with code {proc.returncode}")
        log_event(log, "bgp-speaker-reconfigured")

    @contextlib.asynccontextmanager
    async def _fifo(self) -> AsyncIterator[tuple[Path, asyncio.StreamReader]]:
        """A fresh FIFO for ExaBGP's messages, and a reader on it. A writer end is held open here
        too, so the reader never sees end-of-file while ExaBGP restarts its `dd`."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fifo = self.dir / "feed"
        fifo.unlink(missing_ok=True)
        os.mkfifo(fifo, 0o600)
        rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        wfd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        reader = asyncio.StreamReader(limit=16 << 20)
        loop = asyncio.get_running_loop()
        transport = None
        try:
            transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                        os.fdopen(rfd, "rb", buffering=0))
            yield fifo, reader
        finally:
            if transport is not None:
                transport.close()
            else:
                os.close(rfd)
            os.close(wfd)
            fifo.unlink(missing_ok=True)

    async def _feed(self, reader: asyncio.StreamReader) -> None:
        n = 0
        while True:
            line = await reader.readline()
            if not line:
                return
            self.handle_line(line)
            n += 1
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)

    async def _relay_log(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            text = raw.decode(errors="replace").rstrip()
            if text and not text.endswith(_BANNER):
                log_event(log, "exabgp", logging.INFO, pid=proc.pid, line=text[:500])

    # ---- one message --------------------------------------------------------------------------
    def handle_line(self, line: bytes) -> None:
        now = self.clock()
        try:
            event = parse_message(line)
        except BadMessage as exc:
            self.bad_messages += 1
            self._throttled("-", "bad-message", logging.ERROR, error=str(exc), line=line[:200].decode(errors="replace"))
            return
        if isinstance(event, UpdateEvent):
            self._refusals(event.peer, self.table.on_update(event.peer, event.attributes, event.announced,
                                                            event.withdrawn, now))
        elif isinstance(event, StateEvent):
            change = self.table.on_state(event.peer, event.state, now, event.reason)
            if change is not None:
                session = self.table.sessions[event.peer]
                log_event(log, "bgp-session", logging.WARNING if change[1] == "down" else logging.INFO,
                          peer=session.peer.name, address=event.peer, before=change[0], after=change[1],
                          reason=event.reason, routes_held=len(session.routes))
        elif isinstance(event, EndOfRib):
            gone = self.table.on_end_of_rib(event.peer)
            log_event(log, "bgp-end-of-rib", address=event.peer, family=event.family, stale_withdrawn=gone)
        elif isinstance(event, Notification):
            session = self.table.sessions.get(event.peer)
            if session is not None:
                session.last_error = f"notification {event.code}/{event.subcode} {event.data}".strip()
            log_event(log, "bgp-notification", logging.WARNING, address=event.peer, code=event.code,
                      subcode=event.subcode, data=event.data)

    def _refusals(self, address: str, result: UpdateResult) -> None:
        session = self.table.sessions.get(address)
        for reason, examples in result.refused.items():
            total = session.refused.get(reason, 0) if session is not None else 0
            self._throttled(address, reason.value, logging.WARNING, peer=session.peer.name if session else address,
                            refused_total=total, examples=examples, held=len(session.routes) if session else 0,
                            max_prefixes=self.table.policy.max_prefixes)

    def _throttled(self, address: str, reason: str, level: int, **fields: Any) -> None:
        now = time.monotonic()
        last = self._logged.get((address, reason))
        if last is None or now - last >= LOG_EVERY_S:
            self._logged[(address, reason)] = now
            event = "bgp-bad-message" if reason == "bad-message" else "bgp-route-refused"
            log_event(log, event, level, reason=reason, **fields)


class _Collector:
    """oca_bgp_* for /metrics, read from the table at scrape time."""

    def __init__(self, speaker: Speaker) -> None:
        self.speaker = speaker

    def collect(self) -> Iterator[Any]:
        sp = self.speaker
        up = GaugeMetricFamily("oca_bgp_session_up", "1 while the BGP session is established.", labels=["peer"])
        prefixes = GaugeMetricFamily("oca_bgp_prefixes", "Routes the session holds (accepted).", labels=["peer"])
        refused = CounterMetricFamily("oca_bgp_refused_routes", "Announcements refused by the appliance's policy.",
                                      labels=["peer", "reason"])
        updates = CounterMetricFamily("oca_bgp_updates", "UPDATE messages received.", labels=["peer"])
        for s in sp.table.sessions.values():
            up.add_metric([s.peer.name], 1.0 if s.state == "up" else 0.0)
            prefixes.add_metric([s.peer.name], float(len(s.routes)))
            updates.add_metric([s.peer.name], float(s.updates))
            for reason, n in s.refused.items():
                refused.add_metric([s.peer.name, reason.value], float(n))
        yield from (up, prefixes, refused, updates)
        yield GaugeMetricFamily("oca_bgp_best_routes", "Prefixes reported to steering (best route each).",
                                value=float(len(sp.table.best().routes)))
        yield GaugeMetricFamily("oca_bgp_speaker_up", "1 while ExaBGP runs.", value=1.0 if sp.pid else 0.0)
        yield CounterMetricFamily("oca_bgp_bad_messages", "ExaBGP messages that could not be read.",
                                  value=float(sp.bad_messages))


def _exabgp(cfg: BgpConfig) -> Path:
    if cfg.exabgp is not None:
        return cfg.exabgp
    beside = Path(sys.executable).parent / "exabgp"
    if beside.exists():
        return beside
    found = shutil.which("exabgp")
    if found is None:
        raise SpeakerExited("bgp.exabgp: ExaBGP is not installed (not beside this Python nor on PATH)")
    return Path(found)


def _die_with_parent() -> None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except (TimeoutError, asyncio.TimeoutError):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


__all__ = ["Speaker", "SpeakerExited", "start"]
