"""Maintenance drain: `oca drain [--reason TEXT]` / `oca undrain`, through the admin API.

A drained appliance tells steering `draining` (with the reason) in every heartbeat: steering stops
naming it for new plays at once (steering.core.health: draining is a breach), playback's steering
manifests leave its pathways out, so players move at their next reload, and its data port goes on
serving every URL already handed out — nothing about serving changes. The fill agent is a process of
its own and still fills it. Undrain, and steering offers it again after its usual run of clean reports.

The flag outlives a restart: it lives in `drain.json` in the appliance's state directory (beside the
index), written whole (temporary file, fsync, rename, fsync of the directory), read at start. A file
that cannot be read keeps the appliance drained, with a reason that says so: a box an operator took
out for maintenance must not come back by accident; `oca undrain` writes a good file again.

The admin API is on loopback by default; the two POSTs that change state also need the admin token
(`admin.token` in the state directory, made at first start, mode 0600): whoever may read it — root
or the `oca` user, as the CLI runs — may drain. Anonymous → 401.
"""
from __future__ import annotations

import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contracts.heartbeat import check_drain_reason

STATE_FILE = "drain.json"
TOKEN_FILE = "admin.token"


@dataclass(frozen=True)
class DrainState:
    draining: bool = False
    reason: str = ""
    since: float | None = None  # wall clock of the drain

    def public(self) -> dict[str, Any]:
        return {"draining": self.draining, "reason": self.reason, "since": self.since}


UNDRAINED = DrainState()


class DrainStateError(ValueError):
    status_hint = 400
    reason = "bad-drain-request"


def drained(reason: str, now: float | None = None) -> DrainState:
    """A drain with `reason` (checked as the heartbeat will carry it: DrainStateError otherwise)."""
    try:
        text = check_drain_reason(reason)
    except ValueError as exc:
        raise DrainStateError(f"reason: {exc}") from None
    return DrainState(True, text, time.time() if now is None else now)


def load(path: Path) -> DrainState:
    """The saved state; none saved → undrained; unreadable → drained, saying why."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return UNDRAINED
    except OSError as exc:
        return DrainState(True, f"drain state unreadable ({type(exc).__name__})", None)
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("v") != 1 or not isinstance(data.get("draining"), bool):
            raise ValueError("not a version 1 drain state")
        since = data.get("since")
        if since is not None and (isinstance(since, bool) or not isinstance(since, (int, float))):
            raise ValueError("since: not a time")
        if not data["draining"]:
            return UNDRAINED
        return DrainState(True, check_drain_reason(data.get("reason", "")), None if since is None else float(since))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return DrainState(True, "drain state unreadable (damaged drain.json)", None)


def save(path: Path, state: DrainState) -> None:
    """Replace the file whole and durably (blocking: call it off the event loop)."""
    body = json.dumps({"v": 1, **state.public()}, separators=(",", ":")).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def ensure_token(path: Path) -> str:
    """The admin token, made (0600) if there is none yet."""
    try:
        return read_token(path)
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
    finally:
        os.close(fd)
    return token


def read_token(path: Path) -> str:
    return path.read_text().strip()


def authorized(header: str | None, token: str) -> bool:
    """`Authorization: Bearer <admin token>`, compared in constant time."""
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and bool(token) and hmac.compare_digest(given.strip().encode(), token.encode())


__all__ = ["DrainState", "DrainStateError", "UNDRAINED", "drained", "load", "save", "ensure_token", "read_token",
           "authorized", "STATE_FILE", "TOKEN_FILE"]
