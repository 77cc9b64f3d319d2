"""Withdrawing a title (or one version of it) fleet-wide: steering's side.

    POST /v1/withdrawals  (role "withdraw")  {"title": "t1", "version": "v…" | null, "reason": "…",
                                              "action": "withdraw" | "undo"}      -> 201 {event, withdrawals}
    GET  /v1/withdrawals  (role "fleet" or "withdraw")  -> what is withdrawn now and the audit list

Why an API over a shared store. Every replica must agree, and no shared database sits on the request
path: each event is one object in the control store steering already reads for fill plans (`[fill]
origin`, where `fill plan` writes; contracts.withdrawals has the format). The replica that takes a
POST writes the event object — a new key each time, so two replicas never overwrite each other — and
adopts it before answering: it refuses the files at once. Every other replica lists the log every
`[fill] poll_interval_s` (the `withdrawals` task) and refuses them within one poll. The caller's name
from the callers file is `by`: the audit says who, not who someone typed. `fill plan` reads the same
log and leaves withdrawn files out of every manifest, so the agents delete them at their next fill
and never fetch them again; playback asks GET /v1/withdrawals (with its `fleet` role) and steering
answers its plays of a withdrawn file with 410 regardless.

Failures keep the last good state: a store that cannot be listed or read raises to the task
supervisor (logged, counted, retried, degraded in /healthz) and the replica keeps refusing what it
refused. An event object that does not decode is skipped, logged once and counted
(`steering_withdrawal_events_rejected_total`); events are immutable, so each is read once.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

from aiohttp import web

from contracts.callers import Forbidden
from contracts.logs import log_event
from contracts.withdrawals import (Event, WithdrawalError, Withdrawals, check_reason, check_title, check_version,
                                   encode_event, new_event)
from origin.withdrawals import LogReader
from steering.auth import AUTHENTICATE, CALLER, requires

log = logging.getLogger("steering.withdrawals")
MAX_BODY_BYTES = 4096


class NoControlStore(ValueError):
    status_hint = 503
    reason = "no-control-store"


class NotWithdrawn(ValueError):
    status_hint = 409
    reason = "not-withdrawn"


class WithdrawalLog:
    """The replica's copy of the log; `replica.withdrawals` is what steer() checks."""

    def __init__(self, replica: Any) -> None:
        self.replica = replica  # .config.fill (origin, endpoint_url, poll_interval_s) is read at every poll
        self.reader = LogReader()  # objects never change: each is read once, a skipped one never again
        self.adopted_at: float | None = None
        self._backend: Any = None
        self._where: tuple[str | None, str | None] = (None, None)
        self._lock = asyncio.Lock()  # one poll (or record) at a time

    # ---- reading -----------------------------------------------------------------------------
    async def poll(self) -> None:
        """List the log, read the events not held yet, fold and swap; raises (keeping the last good
        state) when the store cannot be read."""
        if self.replica.config.fill.origin is None:
            return
        async with self._lock:
            fresh, rejected = await asyncio.to_thread(self.reader.read_new, self._open())
            for key, why in rejected.items():
                self.replica.metrics.withdrawal_events_rejected.inc()
                log_event(log, "withdrawal-event-rejected", logging.WARNING, key=key, error=why)
            self._adopt(fresh)

    def _adopt(self, fresh: dict[str, Event]) -> None:
        self.adopted_at = time.time()
        if not fresh and self.replica.withdrawals.events:
            return
        before = self.replica.withdrawals
        after = self.reader.withdrawals()
        self.replica.withdrawals = after
        for e in sorted(fresh.values(), key=lambda e: e.key):
            log_event(log, "withdrawal-adopted", action=e.action, target=e.target, by=e.by, reason=e.reason,
                      at=e.at)
        if set(before.active) != set(after.active):
            log_event(log, "withdrawals", withdrawn=sorted(e.target for e in after.active.values()))

    # ---- writing -----------------------------------------------------------------------------
    async def record(self, action: str, title: str, version: str | None, reason: str, by: str) -> Event:
        """Write one event (a new object), then adopt it here at once. NotWithdrawn for an undo of
        what is not withdrawn; a withdraw of what already is writes nothing and returns that event."""
        if self.replica.config.fill.origin is None:
            raise NoControlStore("no control store: set [fill] origin (where `fill plan` writes) on every replica")
        await self.poll()  # the freshest view before deciding
        current = self.replica.withdrawals.active.get((title, version))
        if action == "undo" and current is None:
            raise NotWithdrawn(f"{title if version is None else f'{title}/{version}'}: not withdrawn")
        if action == "withdraw" and current is not None:
            return current
        event = new_event(action, title, version, reason, by, time.time(), secrets.token_hex(8))
        backend = self._open()
        await asyncio.to_thread(backend.put_bytes, event.key, encode_event(event), "application/json")
        await self.poll()
        return event

    def _open(self) -> Any:
        config = self.replica.config.fill
        where = (config.origin, config.endpoint_url)
        if self._backend is None or where != self._where:
            from origin.backends import open_backend
            from origin.config import S3Config, parse_location

            location = parse_location(config.origin or "", endpoint_url=config.endpoint_url, where="fill.origin")
            self._backend, self._where = open_backend(location, S3Config(max_attempts=3)), where
        return self._backend

    def health(self) -> dict[str, Any]:
        w: Withdrawals = self.replica.withdrawals
        return {"active": len(w.active), "events": len(w.events), "rejected": len(self.reader.rejected),
                "adopted_at": self.adopted_at}


WITHDRAWALS = web.AppKey("withdrawals", WithdrawalLog)


# ---- handlers (steering.server wraps them in its `refusals`) -----------------------------------

async def withdrawals_get(request: web.Request) -> web.Response:
    caller = request.app[AUTHENTICATE](request)
    if not caller.roles & {"fleet", "withdraw"}:
        raise Forbidden(f"caller {caller.name!r} may not read withdrawals")
    log_ = request.app[WITHDRAWALS]
    body = {**log_.replica.withdrawals.public(), "log": log_.health()}
    return web.json_response(body, headers={"Cache-Control": "no-store"})


@requires("withdraw")
async def withdrawals_post(request: web.Request) -> web.Response:
    from contracts.webguard import GUARD

    log_ = request.app[WITHDRAWALS]
    body = await request.app[GUARD].read_json(request, MAX_BODY_BYTES)
    unknown = set(body) - {"title", "version", "reason", "action"}
    if unknown:
        raise WithdrawalError(f"unknown field {sorted(unknown)[0]!r}")
    action = body.get("action", "withdraw")
    if action not in ("withdraw", "undo"):
        raise WithdrawalError("action: withdraw or undo")
    version = body.get("version")
    event = await log_.record(action, check_title(body.get("title")),
                              None if version is None else check_version(version),
                              check_reason(body.get("reason")), request[CALLER].name)
    return web.json_response({"event": event.public(), **log_.replica.withdrawals.public()}, status=201)


__all__ = ["WithdrawalLog", "WITHDRAWALS", "withdrawals_get", "withdrawals_post", "NoControlStore", "NotWithdrawn"]
