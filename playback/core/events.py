"""Viewing events and the popularity they feed.

An event is `{userId, videoId, event: play|progress|stop, timestamp, position}` (timestamp: epoch
seconds or milliseconds; position: seconds into the title; optional `rendition`: the name of the
rendition playing). `validate` returns an Event or raises EventError naming the field; a batch is
accepted whole or not at all. `Popularity` keeps, per title, exponentially decayed plays and bytes
(watched seconds x the rendition's average bit rate; without `rendition`, the middle video rung) and
per file the same (requests, bytes) pair appliances put in their heartbeats, so fill's planner can
read it as bytes streamed / file size.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from contracts.catalog import Rendition, TitleEntry

KINDS = ("play", "progress", "stop")
MAX_ID = 128
MAX_SKEW_S = 7 * 86400
MAX_STEP_S = 600.0  # a progress step longer than this (a seek, a lost stop) counts this much at most


class EventError(ValueError):
    status_hint = 400
    reason = "bad-event"


@dataclass(frozen=True)
class Event:
    user: str
    title: str
    kind: str
    at: float  # epoch seconds
    position_s: float
    rendition: str | None = None


def _str(raw: Mapping[str, Any], name: str, where: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID:
        raise EventError(f"{where}{name}: must be a non-empty string of at most {MAX_ID} characters")
    return value


def _num(raw: Mapping[str, Any], name: str, where: str) -> float:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise EventError(f"{where}{name}: must be a non-negative number")
    return float(value)


def validate(raw: Any, find: Callable[[str], TitleEntry | None], now: float, where: str = "") -> Event:
    if not isinstance(raw, Mapping):
        raise EventError(f"{where or 'event'}: must be an object")
    unknown = sorted(set(raw) - {"userId", "videoId", "event", "timestamp", "position", "rendition"})
    if unknown:
        raise EventError(f"{where}{unknown[0]}: unknown field")
    user, title = _str(raw, "userId", where), _str(raw, "videoId", where)
    kind = raw.get("event")
    if kind not in KINDS:
        raise EventError(f"{where}event: must be one of {', '.join(KINDS)}")
    at = _num(raw, "timestamp", where)
    at = at / 1000 if at > 1e11 else at  # milliseconds, as JavaScript's Date.now()
    if abs(at - now) > MAX_SKEW_S:
        raise EventError(f"{where}timestamp: more than {MAX_SKEW_S // 86400} days from now")
    position = _num(raw, "position", where)
    entry = find(title)
    if entry is None:
        raise EventError(f"{where}videoId: no such title")
    if position > entry.duration_s + 5:
        raise EventError(f"{where}position: beyond the title's duration ({entry.duration_s:.1f} s)")
    rendition = raw.get("rendition")
    if rendition is not None and (not isinstance(rendition, str)
                                  or rendition not in {r.name for r in entry.renditions if r.kind == "video"}):
        raise EventError(f"{where}rendition: not a video rendition of the title")
    return Event(user, title, kind, at, position, rendition)


def validate_batch(body: Any, find: Callable[[str], TitleEntry | None], now: float,
                   max_events: int) -> list[Event]:
    items = body.get("events") if isinstance(body, Mapping) and "events" in body else body
    if isinstance(items, Mapping):
        return [validate(items, find, now)]
    if not isinstance(items, list) or not 0 < len(items) <= max_events:
        raise EventError(f"events: an event object or a list of 1..{max_events}")
    return [validate(e, find, now, f"events[{i}].") for i, e in enumerate(items)]


class Decayed:
    """A value that halves every `half_life_s`, kept as (value, as of)."""
    __slots__ = ("value", "at")

    def __init__(self) -> None:
        self.value, self.at = 0.0, 0.0

    def add(self, amount: float, now: float, half_life_s: float) -> None:
        self.value = self.get(now, half_life_s) + amount
        self.at = now

    def get(self, now: float, half_life_s: float) -> float:
        return self.value * 0.5 ** (max(0.0, now - self.at) / half_life_s) if self.value else 0.0


class Popularity:
    def __init__(self, half_life_s: float = 86400.0, max_sessions: int = 100_000) -> None:
        self.half_life_s = half_life_s
        self.max_sessions = max_sessions
        self.plays: dict[str, Decayed] = {}
        self.bytes: dict[str, Decayed] = {}
        self.file_bytes: dict[str, Decayed] = {}
        self.file_requests: dict[str, Decayed] = {}
        self.sessions: dict[tuple[str, str], tuple[float, float]] = {}  # (user, title) -> (position, at)
        self.accepted = 0

    def add(self, event: Event, entry: TitleEntry, now: float) -> None:
        self.accepted += 1
        key = (event.user, event.title)
        if event.kind == "play":
            self.plays.setdefault(event.title, Decayed()).add(1.0, now, self.half_life_s)
        last = self.sessions.get(key)
        if event.kind != "play" and last is not None:
            watched = event.position_s - last[0]
            wall = max(0.0, event.at - last[1]) + 2.0  # clocks and rates: a little slack
            if 0 < watched:
                self._watched(entry, event.rendition, min(watched, wall * 2.0, MAX_STEP_S), now)
        if event.kind == "stop":
            self.sessions.pop(key, None)
        else:
            if len(self.sessions) >= self.max_sessions and key not in self.sessions:
                self.sessions.pop(next(iter(self.sessions)))
            self.sessions[key] = (event.position_s, event.at)

    def _watched(self, entry: TitleEntry, rendition: str | None, seconds: float, now: float) -> None:
        video = sorted(entry.video, key=lambda r: r.average_bandwidth)
        chosen = next((r for r in video if r.name == rendition), video[len(video) // 2])
        files: list[Rendition] = [chosen, *entry.audio[:1]]
        total = 0.0
        for r in files:
            nbytes = seconds * r.average_bandwidth / 8
            total += nbytes
            self.file_bytes.setdefault(r.key, Decayed()).add(nbytes, now, self.half_life_s)
            self.file_requests.setdefault(r.key, Decayed()).add(1.0, now, self.half_life_s)
        self.bytes.setdefault(entry.title_id, Decayed()).add(total, now, self.half_life_s)

    def snapshot(self, now: float) -> dict[str, Any]:
        h = self.half_life_s
        titles = sorted(set(self.plays) | set(self.bytes))
        return {
            "version": 1, "generated_at": now, "half_life_s": h, "events_accepted": self.accepted,
            "titles": {t: {"plays": round(self.plays[t].get(now, h), 6) if t in self.plays else 0.0,
                           "bytes": round(self.bytes[t].get(now, h), 1) if t in self.bytes else 0.0}
                       for t in titles},
            # the heartbeat's popularity shape: file key -> [requests, bytes] (decayed)
            "files": {k: [round(self.file_requests[k].get(now, h), 6), round(v.get(now, h), 1)]
                      for k, v in sorted(self.file_bytes.items())},
        }
