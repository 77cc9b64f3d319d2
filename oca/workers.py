"""The serving worker processes the supervisor (oca.daemon) runs: a generation is the set started
together from one config, one process per slot, each counting into its own slot of the shared metrics
file (oca.metrics). Two generations live at once only across a reload, so each counts into its own
half of the file and a draining generation never shares a slot with its successor (two writers of one
counter lose updates)."""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

from contracts.logs import log_event
from oca.config import OcaConfig
from oca.http.worker import worker_main

WORKER_READY_TIMEOUT_S = 30.0
SLOTS_PER_GENERATION = 64
METRICS_SLOTS = 2 * SLOTS_PER_GENERATION  # the metrics file: a half for each of two generations
# Workers come from a fork server that has imported the serving code once: a fresh interpreter per
# worker ("spawn") re-imports everything, about half a second each, which start-up can't afford.
# It is started before the supervisor's event loop, so no worker inherits loop state.
_mp = multiprocessing.get_context("forkserver")
_mp.set_forkserver_preload(["oca.http.worker"])

_log = logging.getLogger("oca")


class Generation:
    """The worker processes started together from one config."""

    def __init__(self, config: OcaConfig, metrics_path: Path, number: int = 0) -> None:
        self.config = config
        self.metrics_path = metrics_path
        self.base_slot = (number % 2) * SLOTS_PER_GENERATION
        self.procs: list[Any] = []

    def _process(self, slot: int, ready: Any) -> Any:
        return _mp.Process(target=worker_main, name=f"oca-worker-{slot}", daemon=False,
                           args=(self.config, self.base_slot + slot, self.metrics_path, ready, os.getpid()))

    def start(self) -> None:
        events = []
        for slot in range(self.config.effective_workers()):
            ready = _mp.Event()
            proc = self._process(slot, ready)
            proc.start()
            self.procs.append(proc)
            events.append(ready)
        deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
        for proc, ready in zip(self.procs, events):
            while not ready.wait(0.1):
                if not proc.is_alive() or time.monotonic() > deadline:
                    self.terminate()
                    raise RuntimeError(f"{proc.name} did not start (exit code {proc.exitcode})")

    def respawn_dead(self) -> None:
        for slot, proc in enumerate(self.procs):
            if not proc.is_alive():
                log_event(_log, "worker-restart", logging.WARNING, worker="supervisor", slot=slot,
                          exit_code=proc.exitcode)
                fresh = self._process(slot, None)
                fresh.start()
                self.procs[slot] = fresh

    def signal(self, signum: int) -> None:
        for proc in self.procs:
            if proc.is_alive() and proc.pid:
                os.kill(proc.pid, signum)

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(1)
