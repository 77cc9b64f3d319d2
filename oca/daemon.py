"""`oca serve`: the supervisor. It owns the store (disk checks, the tier mover), runs the serving
workers (one process per core on one SO_REUSEPORT port), sums their counters, and answers the
control endpoints with aiohttp on the admin port: /healthz, /metrics, /v1/health, /v1/inventory.

Lifecycle: workers are (re)started as a generation (oca.workers); a crashed worker is replaced.
SIGHUP re-reads the config: if it is valid and changed, a new generation starts and the old one drains — the
listening port never closes, so no connection is refused; if only keys changed, workers reload
them. SIGUSR1 (logrotate) is forwarded to every worker, which reopens its access log file. SIGTERM
or Ctrl-C: report draining, let the workers drain, exit. A maintenance drain (`oca drain`, POST
/v1/drain on the admin port; oca.drain) only reports draining: workers serve on, the flag is durable.
With systemd (Type=notify) it sends READY=1, WATCHDOG=1 and STOPPING=1.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from typing import Any

from msgspec.structs import replace

from contracts.heartbeat import DiskReport, DiskState, HealthSnapshot, Load
from contracts.logs import log_event, setup_logging
from contracts.supervise import TaskSupervisor
from contracts.systemd import sd_notify
from contracts.keys import write_new_keyfile
from oca import config as oca_config
from oca import drain as oca_drain
from oca.config import OcaConfig
from oca.http.worker import listening_socket
from oca.metrics import create_file, read_totals
from oca.store.health import disk_json
from oca.store.store import Store
from oca.workers import METRICS_SLOTS, SLOTS_PER_GENERATION, Generation

CLEANUP_EVERY_S = 600.0  # temp files of crashed writers, cold popularity rows, the old change log
_log = logging.getLogger("oca")


def log(event: str, level: int = logging.INFO, **fields: Any) -> None:
    log_event(_log, event, level, worker="supervisor", **fields)


def prepare_dev(config: OcaConfig) -> None:
    """Dev mode makes what a first try needs: the state directory and a signing key."""
    config.tokens.key_file.parent.mkdir(parents=True, exist_ok=True)
    if not config.tokens.key_file.exists():
        write_new_keyfile(config.tokens.key_file)


class Supervisor:
    def __init__(self, config: OcaConfig) -> None:
        self.config = config
        self.draining = False
        self.stopping = asyncio.Event()
        self.started_at = time.time()
        self.egress_bps = 0.0
        self.disk_health: list[Any] = []
        self.reporter: Any = None  # oca.reporter.Reporter when [steering] urls are set
        self.follower: Any = None  # oca.inventory.InventoryFollower, with the reporter
        self.bgp: Any = None  # oca.bgp.speaker.Speaker when [bgp] is configured
        self.tasks = TaskSupervisor("oca")
        self.generations = 0  # generations started: which half of the metrics file the next one uses
        self.retiring: Generation | None = None  # the generation draining after a reload
        self.tls_port_holder: Any = None  # [tls]: the TLS port, held like the plain one
        self.certificates: Any = None  # [tls]: oca.tlsconf.CertificateWatch (expiry for health, metrics)
        self._reload_lock = asyncio.Lock()  # one reload at a time: at most two generations alive
        from oca.store.scrub import ScrubStats

        self.scrub_stats = ScrubStats()
        # maintenance drain (`oca drain`): an operator's, durable in the state directory (oca.drain);
        # `draining` above is the SIGTERM one, which also stops accepting
        self.drain_path = config.store.index_path.parent / oca_drain.STATE_FILE
        self.maintenance: oca_drain.DrainState = oca_drain.load(self.drain_path)
        self.admin_token = ""  # made at start (oca.drain.ensure_token): the admin API's POSTs need it
        run_dir = config.store.index_path.parent / "run"
        self.metrics_path = run_dir / f"metrics-{os.getpid()}.bin"

    async def run(self) -> None:
        config = self.config
        if config.dev:  # a first try: the files dropped in DIR are indexed before anyone asks
            prepare_dev(config)
            self.store = await asyncio.to_thread(Store.open, config)
            await asyncio.to_thread(self.store.scan, config.disks[0].path)
        # Hold the port for the workers: with port 0 this picks one they can all bind.
        self.port_holder = listening_socket(config.http.listen, config.http.port, listen=False)
        config = self.config = replace(config, http=replace(config.http, port=self.port_holder.getsockname()[1]))
        if config.tls is not None:  # the TLS port too (oca.tlsconf); its certificates watched for health
            from oca.tlsconf import CertificateWatch

            self.tls_port_holder = listening_socket(config.tls.listen, config.tls.port, listen=False)
            tls = replace(config.tls, port=self.tls_port_holder.getsockname()[1])
            config = self.config = replace(config, tls=tls)
            self.certificates = CertificateWatch(config.tls)
        create_file(self.metrics_path, METRICS_SLOTS)
        self.generation = self._new_generation(config)
        self.generations += 1
        # Workers load the index while the supervisor checks the disks: start-up is the slower of two.
        starting = asyncio.create_task(asyncio.to_thread(self.generation.start))
        if not config.dev:
            self.store = await asyncio.to_thread(Store.open, config)
        self.disk_health = await asyncio.to_thread(self.store.check_disks)
        await starting
        runner = await self._start_admin()
        self._install_signals()
        self._start_chores()
        self._announce()
        sd_notify("READY=1")
        await self.stopping.wait()
        await self._shutdown(runner)

    def _new_generation(self, config: OcaConfig) -> Generation:
        """The next generation (not started); it counts into the half of the metrics file that the
        running one does not use."""
        if config.effective_workers() > SLOTS_PER_GENERATION:
            raise oca_config.ConfigError(f"http.workers: at most {SLOTS_PER_GENERATION}")
        return Generation(config, self.metrics_path, self.generations + 1)

    def _start_chores(self) -> None:
        """Every background task runs supervised: logged, counted, restarted, shown in health."""
        t, c = self.tasks, self.config
        t.every("watch-workers", 1.0, self._respawn_workers)
        t.every("check-disks", lambda: self.config.store.disk_check_interval_s, self._check_disks)
        t.spawn("sample-egress", self._sample_egress)
        t.every("watchdog", 5.0, lambda: sd_notify("WATCHDOG=1"))
        t.every("cleanup", CLEANUP_EVERY_S, self._cleanup, first_delay_s=0)
        if c.mover.enabled:
            t.every("mover", c.mover.interval_s, self._move_once)
        if c.store.scrub_rate_bps > 0:
            t.every("scrub", c.store.scrub_pause_s, self._scrub_pass, first_delay_s=0)
        if c.bgp is not None:  # the speaker follows reloads of [bgp] itself
            from oca.bgp.speaker import start as start_bgp

            self.bgp = start_bgp(t, lambda: self.config.bgp, self.metrics_path.parent)
        if c.steering.urls:
            self._start_reporting()

    def _announce(self) -> None:
        c = self.config
        log("ready", appliance=c.appliance_id, port=c.http.port, admin_port=self.admin_port,
            tls_port=c.tls.port if c.tls is not None else None,
            workers=c.effective_workers(), files=self.store.index.count(), sendfile=c.http.sendfile)
        if c.dev:
            state = c.tokens.key_file.parent
            tls = {"tls_port": c.tls.port, "tls_cert": str(c.tls.certificates[0].cert),
                   "tls_key": str(c.tls.certificates[0].key)} if c.tls is not None else {}
            (state / "dev.json").write_text(json.dumps(
                {"port": c.http.port, "admin_port": self.admin_port, "host": c.http.listen, "pid": os.getpid(), **tls}))
            print(f"oca dev appliance serving {c.disks[0].path} on http://{c.http.listen}:{c.http.port}/ "
                  f"(admin http://127.0.0.1:{self.admin_port}/metrics)\n"
                  f"  signed URL for a file: oca url --dev {c.disks[0].path} KEY", file=sys.stderr, flush=True)

    async def _start_admin(self) -> Any:
        from oca.admin import start_admin  # aiohttp: imported once the workers are on their way

        self.admin_token = await asyncio.to_thread(
            oca_drain.ensure_token, self.config.store.index_path.parent / oca_drain.TOKEN_FILE)
        if self.maintenance.draining:
            log("drained-at-start", logging.WARNING, reason=self.maintenance.reason, since=self.maintenance.since)
        runner, self.admin_port = await start_admin(self)
        return runner

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._begin_stop)
        loop.add_signal_handler(signal.SIGINT, self._begin_stop)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self._reload()))
        loop.add_signal_handler(signal.SIGUSR1, self._reopen_logs)

    def _reopen_logs(self) -> None:
        """logrotate renamed the access log: every worker (a draining generation's too) reopens it."""
        for generation in (self.generation, self.retiring):
            if generation is not None:
                generation.signal(signal.SIGUSR1)
        log("access-log-reopen")

    def _begin_stop(self) -> None:
        if not self.draining:
            self.draining = True
            log("draining")
            sd_notify("STOPPING=1")
            self.stopping.set()

    async def _shutdown(self, runner: Any) -> None:
        async with self._reload_lock:  # a reload in progress finishes (or refuses) first
            self.generation.terminate()
            await asyncio.to_thread(self.generation.join, self.config.http.drain_timeout_s + 5)
        await self.tasks.shutdown()
        await runner.cleanup()
        self.port_holder.close()
        if self.tls_port_holder is not None:
            self.tls_port_holder.close()
        self.store.close()
        try:
            self.metrics_path.unlink()
        except OSError:
            pass
        log("stopped")

    async def _reload(self) -> None:
        if self.draining:
            return
        async with self._reload_lock:
            await self._reload_locked()

    async def _reload_locked(self) -> None:
        if self.config.source is None:
            self.generation.signal(signal.SIGHUP)
            return
        try:
            fresh = await asyncio.to_thread(oca_config.load, self.config.source)
        except oca_config.ConfigError as exc:
            log("reload-refused", logging.ERROR, error=str(exc))
            return
        fresh = replace(fresh, http=replace(fresh.http, port=self.config.http.port))
        if fresh.tls is not None and self.config.tls is not None:
            fresh = replace(fresh, tls=replace(fresh.tls, port=self.config.tls.port))
        if fresh == self.config:
            self.generation.signal(signal.SIGHUP)
            log("reloaded", restarted_workers=False)
            return
        if fresh.http.listen != self.config.http.listen or fresh.store != self.config.store:
            log("reload-refused", logging.ERROR, error="http.listen and store.* need a restart")
            return
        if (fresh.tls is None) != (self.config.tls is None) or (fresh.tls is not None and (
                fresh.tls.listen, fresh.tls.plain_port) != (self.config.tls.listen, self.config.tls.plain_port)):
            log("reload-refused", logging.ERROR, error="adding or removing [tls], tls.listen, tls.plain_port "
                                                       "need a restart")
            return
        try:
            generation = self._new_generation(fresh)
            await asyncio.to_thread(generation.start)
        except (oca_config.ConfigError, RuntimeError) as exc:
            log("reload-refused", logging.ERROR, error=str(exc))
            return
        old, self.generation, self.config = self.generation, generation, fresh
        if fresh.tls is not None:
            from oca.tlsconf import CertificateWatch

            self.certificates = CertificateWatch(fresh.tls)
        self.generations += 1
        self.retiring = old
        old.terminate()
        await asyncio.to_thread(old.join, fresh.http.drain_timeout_s + 5)
        self.retiring = None
        log("reloaded", restarted_workers=True)

    # ---- chores (run by self.tasks) -----------------------------------------------------------
    def _respawn_workers(self) -> None:
        if not self.draining and not self._reload_lock.locked():
            self.generation.respawn_dead()

    async def _check_disks(self) -> None:
        self.disk_health = await asyncio.to_thread(self.store.check_disks)

    async def _sample_egress(self) -> None:
        last = self._bytes_sent(), time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            now = self._bytes_sent(), time.monotonic()
            self.egress_bps = 8 * (now[0] - last[0]) / max(now[1] - last[1], 1e-6)
            last = now

    async def _cleanup(self) -> None:
        """Temp files of writers that crashed, popularity rows gone cold, the old change log."""
        store, half_life = self.store, self.config.store.popularity_half_life_s

        def clean() -> dict[str, int]:
            now = time.time()
            return {"tmp_files": store.clean_tmp(now),
                    "popularity_rows": store.index.prune_popularity(now, half_life),
                    "change_log_rows": store.index.prune_changes()}

        removed = await asyncio.to_thread(clean)
        if any(removed.values()):
            log("cleanup", **removed)

    async def _move_once(self) -> None:
        from oca.store.mover import run_mover_once

        mover = self.config.mover
        moves = await asyncio.to_thread(run_mover_once, self.store, time.time(),
                                        int(mover.io_budget_bps * mover.interval_s), float(mover.io_budget_bps),
                                        self.stopping.is_set)
        if moves:
            log("moved", files=len(moves), bytes=sum(m.size for m in moves))

    async def _scrub_pass(self) -> None:
        from oca.store.scrub import scrub_pass

        def corrupt(key: str) -> None:
            log("corrupt-file-dropped", logging.ERROR, key=key)  # the next fill run fetches it again

        await asyncio.to_thread(scrub_pass, self.store, self.config.store.scrub_rate_bps, self.scrub_stats,
                                self.stopping.is_set, corrupt)

    def _start_reporting(self) -> None:
        """Heartbeats go on while draining (steering must hear "draining"); stopped at the very end."""
        from oca.inventory import InventoryFollower
        from oca.reporter import KeyFile, Reporter

        follower = self.follower = InventoryFollower(self.store.index,
                                                     lambda: self.config.store.popularity_half_life_s)
        link, c = self.config.steering, self.config
        self.reporter = Reporter(c.appliance_id, c.site, link.urls, link.report_interval_s,
                                 snapshot=self.health_snapshot, inventory=follower.inventory,
                                 keys=KeyFile(c.tokens.key_file),
                                 routes=self.bgp.routes if self.bgp is not None else None)

        async def report() -> None:
            await follower.ready.wait()  # the first report carries the whole inventory
            await self.reporter.run(asyncio.Event())

        self.tasks.spawn("inventory-follower", follower.follow)
        self.tasks.spawn("heartbeat-reporter", report)

    def _bytes_sent(self) -> float:
        totals = read_totals(self.metrics_path, METRICS_SLOTS)
        return totals["bytes_ssd"] + totals["bytes_hdd"] + totals["bytes_other"]

    # ---- control endpoints --------------------------------------------------------------------
    async def set_drain(self, state: "oca_drain.DrainState") -> "oca_drain.DrainState":
        """Drain or undrain for maintenance: saved first (durable), then reported from the next
        heartbeat on. Serving is untouched: URLs already handed out keep working."""
        if state.draining == self.maintenance.draining and state.reason == self.maintenance.reason:
            return self.maintenance  # nothing changes (and a drain keeps its first `since`)
        await asyncio.to_thread(oca_drain.save, self.drain_path, state)
        self.maintenance = state
        log("drained" if state.draining else "undrained", logging.WARNING if state.draining else logging.INFO,
            reason=state.reason)
        return state

    def health_report(self) -> dict[str, Any]:
        disks = [disk_json(d) for d in self.disk_health]
        workers_alive = sum(p.is_alive() for p in self.generation.procs)
        accepting = not self.draining and workers_alive > 0 and any(d["ok"] for d in disks)
        totals = read_totals(self.metrics_path, METRICS_SLOTS)
        degraded = self.tasks.degraded()
        if totals["access_log_failing"] > 0:  # serving goes on; lines are being dropped (counted)
            degraded.append("access-log")
        tls = self.certificates.health(port=self.config.tls.port) if self.certificates is not None else None
        if tls is not None and tls["warnings"]:  # a certificate near (or past) its end: renew it
            degraded.append("tls-certificate")
        return {
            "appliance": self.config.appliance_id,
            "site": self.config.site,
            "status": "draining" if self.draining or self.maintenance.draining else "down" if not accepting else
                      "degraded" if degraded else "ok",
            "accepting": accepting,
            "draining": self.draining or self.maintenance.draining,
            "drain": self.maintenance.public(),  # the operator's drain (`oca drain`), durable
            "degraded": degraded,
            "workers": {"alive": workers_alive, "configured": len(self.generation.procs),
                        # a reload's previous generation, finishing what it accepted
                        "retiring": len(self.retiring.procs) if self.retiring is not None else 0},
            "load": {"loadavg": list(os.getloadavg()), "open_connections": totals["open_connections"]},
            "egress_bps": round(self.egress_bps),
            "capacity_bps": self.config.egress_capacity_bps,
            "disks": disks,
            "files": self.store.index.count(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "tasks": self.tasks.status(),
            "access_log": {"failing_workers": int(totals["access_log_failing"]),
                           "dropped_lines": int(totals["access_log_dropped_lines"]),
                           "dropped_bytes": int(totals["access_log_dropped_bytes"])},
            "steering": [vars(r) for r in self.reporter.status()] if self.reporter is not None else [],
            "bgp": self.bgp.health() if self.bgp is not None else None,
            "tls": tls,
        }

    def health_snapshot(self) -> HealthSnapshot:
        """health_report as a heartbeat carries it (the reporter calls it on the loop: all in memory)."""
        report = self.health_report()
        disks = tuple(DiskReport(path=d["path"], tier=d["tier"], state=DiskState.OK if d["ok"] else DiskState.FAILED,
                                 total_bytes=int(d["total_bytes"]), free_bytes=int(d["free_bytes"]),
                                 files=int(d["files"])) for d in report["disks"])
        return HealthSnapshot(
            accepting=report["accepting"], draining=report["draining"], drain_reason=report["drain"]["reason"],
            load=Load(loadavg=report["load"]["loadavg"][0], open_connections=int(report["load"]["open_connections"])),
            egress_bps=int(report["egress_bps"]), capacity_bps=int(report["capacity_bps"]),
            disks=disks, popularity=self.follower.popularity if self.follower is not None else {},
            degraded=tuple(report["degraded"]), pull_through=self.config.pull_through.enabled,
            bgp=tuple(self.bgp.table.public()) if self.bgp is not None else ())


def serve(config: OcaConfig) -> None:
    import uvloop
    from multiprocessing import forkserver

    setup_logging("oca")
    # Ignored until the loop handles it, in the fork server and (inherited) every worker before it
    # installs its handler: a log rotation at the wrong moment must never kill a process.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    forkserver.ensure_running()
    uvloop.run(Supervisor(config).run())
