"""Supervision for every daemon's background work: nothing fails silently.

A chore (index follower, heartbeat reporter, mover, scrub, steering's tick, playback's reload…) is
started with `spawn(name, factory)` or, for a step repeated on an interval, `every(name, interval,
step)`. When it raises, the supervisor logs the traceback, counts the failure
(`<service>_task_failures_total{task=…}`), waits a backoff that doubles up to a cap, and starts it
again. A task whose recent failures reach `degraded_after` in a row is reported by `degraded()`, which
daemons put in `/healthz` / `/v1/health` (and the appliance in its heartbeats); one clean run — a
successful step, or running longer than the backoff cap — clears it. `shutdown()` cancels every task
and awaits it, so nothing outlives the daemon's loop half-finished.

The decisions (the next delay, when a task counts as degraded) are a small pure class, `Backoff`,
table-tested on its own; `TaskSupervisor` is the asyncio shell around it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

Factory = Callable[[], Awaitable[Any]]


@dataclass
class Backoff:
    """Restart delays for one task: initial, doubled per failure in a row, capped."""

    initial_s: float = 0.5
    max_s: float = 30.0
    streak: int = 0  # failures since the last clean run

    def failed(self) -> float:
        """Record a failure; the delay before the next start."""
        self.streak += 1
        return min(self.max_s, self.initial_s * (2 ** (self.streak - 1)))

    def succeeded(self) -> None:
        self.streak = 0


@dataclass
class TaskState:
    name: str
    backoff: Backoff
    restart: bool = True
    state: str = "starting"  # running | backoff | finished | failed | stopped
    failures: int = 0
    restarts: int = 0
    last_error: str = ""
    last_failure_at: float | None = None
    task: asyncio.Task | None = field(default=None, repr=False)

    def public(self) -> dict[str, Any]:
        return {"task": self.name, "state": self.state, "failures": self.failures, "restarts": self.restarts,
                "failing_in_a_row": self.backoff.streak, "last_error": self.last_error,
                "last_failure_at": self.last_failure_at}


class TaskSupervisor:
    """Runs, restarts and accounts for a daemon's background tasks."""

    def __init__(self, service: str, logger: logging.Logger | None = None, *, backoff_initial_s: float = 0.5,
                 backoff_max_s: float = 30.0, degraded_after: int = 3,
                 registry: CollectorRegistry | None = None,
                 on_failure: Callable[[str, BaseException], None] | None = None) -> None:
        self.service = service
        self.log = logger or logging.getLogger(f"{service}.tasks")
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.degraded_after = degraded_after
        self.tasks: dict[str, TaskState] = {}
        self.registry = registry if registry is not None else CollectorRegistry()
        self._failures = Counter(f"{service}_task_failures", "Background task failures (each logged with its "
                                 "traceback)", ["task"], registry=self.registry)
        self._restarts = Counter(f"{service}_task_restarts", "Background task restarts after a failure",
                                 ["task"], registry=self.registry)
        self._up = Gauge(f"{service}_task_up", "1 while a background task runs, 0 while it waits to restart",
                         ["task"], registry=self.registry)
        self._on_failure = on_failure  # e.g. a serving worker counts into its shared-memory slot
        self._stopping = False

    # ---- starting -----------------------------------------------------------------------------
    def spawn(self, name: str, factory: Factory, *, restart: bool = True) -> TaskState:
        """Run `factory()` as task `name`; restarted after a failure unless `restart` is False (then a
        failure leaves it `failed` and degraded). A task that returns is `finished`."""
        if name in self.tasks:
            raise ValueError(f"task {name!r} is already supervised")
        st = TaskState(name, Backoff(self.backoff_initial_s, self.backoff_max_s), restart)
        self.tasks[name] = st
        self._failures.labels(task=name)
        self._restarts.labels(task=name)
        st.task = asyncio.get_running_loop().create_task(self._run(st, factory), name=f"{self.service}:{name}")
        return st

    def every(self, name: str, interval_s: float | Callable[[], float], step: Callable[[], Any], *,
              first_delay_s: float | None = None) -> TaskState:
        """Call `step()` (sync or async) every `interval_s` (a number or a callable read each time,
        so a reload can change it). A failed step restarts the loop after the backoff."""
        interval = interval_s if callable(interval_s) else (lambda: interval_s)

        async def loop() -> None:
            await asyncio.sleep(interval() if first_delay_s is None else first_delay_s)
            while True:
                result = step()
                if asyncio.iscoroutine(result):
                    await result
                self.succeeded(name)
                await asyncio.sleep(interval())

        return self.spawn(name, loop)

    def succeeded(self, name: str) -> None:
        """A task says it completed a unit of work cleanly: its failure streak is over."""
        st = self.tasks.get(name)
        if st is not None:
            st.backoff.succeeded()

    # ---- running ------------------------------------------------------------------------------
    async def _run(self, st: TaskState, factory: Factory) -> None:
        gauge = self._up.labels(task=st.name)
        while not self._stopping:
            st.state = "running"
            gauge.set(1)
            started = time.monotonic()
            try:
                await factory()
            except asyncio.CancelledError:
                st.state = "stopped"
                gauge.set(0)
                raise
            except Exception as exc:  # noqa: BLE001 - the point: log, count, restart
                gauge.set(0)
                if time.monotonic() - started > st.backoff.max_s:
                    st.backoff.succeeded()  # it ran long and well before this failure
                delay = st.backoff.failed()
                st.failures += 1
                st.last_error = f"{type(exc).__name__}: {exc}"[:500]
                st.last_failure_at = time.time()
                self._failures.labels(task=st.name).inc()
                if self._on_failure is not None:
                    self._on_failure(st.name, exc)
                self.log.error("task-failed", exc_info=True, extra={"fields": {
                    "task": st.name, "failures": st.failures, "in_a_row": st.backoff.streak,
                    "restart_in_s": delay if st.restart else None, "error": st.last_error}})
                if not st.restart:
                    st.state = "failed"
                    return
                st.state = "backoff"
                await asyncio.sleep(delay)
                st.restarts += 1
                self._restarts.labels(task=st.name).inc()
                continue
            st.state = "finished"
            gauge.set(0)
            return

    # ---- reporting ----------------------------------------------------------------------------
    def degraded(self) -> list[str]:
        """Tasks that keep failing (or died for good): what health reports as degraded."""
        return sorted(name for name, st in self.tasks.items()
                      if st.state == "failed" or st.backoff.streak >= self.degraded_after)

    def status(self) -> list[dict[str, Any]]:
        return [st.public() for st in self.tasks.values()]

    # ---- stopping -----------------------------------------------------------------------------
    async def stop(self, name: str) -> None:
        st = self.tasks.pop(name, None)
        if st is not None and st.task is not None:
            st.task.cancel()
            await asyncio.gather(st.task, return_exceptions=True)

    async def shutdown(self, timeout_s: float = 10.0) -> None:
        """Cancel every task and wait for each to finish its cleanup (bounded by `timeout_s`)."""
        self._stopping = True
        tasks = [st.task for st in self.tasks.values() if st.task is not None and not st.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                self.log.error("task-did-not-stop", extra={"fields": {"task": task.get_name()}})


__all__ = ["Backoff", "TaskState", "TaskSupervisor"]
