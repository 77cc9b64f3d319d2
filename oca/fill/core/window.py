"""The fill window: a daily span of local wall-clock time (Open Connect: 12 h from 02:00, shiftable
±2 h per site). `state(now_local, window)` says whether `now_local` is inside and how long is left, or
how long until the next start. Windows may cross midnight (22:00 for 8 h). Local wall time is given by
the caller (a naive datetime), so time zones and DST are the shell's business."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class Window:
    start_minute: int  # minutes after local midnight, 0..1439
    duration_s: float  # 0 < duration <= 24 h
    shift_minutes: int = 0  # the site's shift (e.g. -120..120), added to the start

    def __post_init__(self) -> None:
        if not 0 < self.duration_s <= DAY_S:
            raise ValueError("window duration must be in (0, 24 h]")


@dataclass(frozen=True, slots=True)
class WindowState:
    inside: bool
    remaining_s: float  # inside: seconds until the window ends; else 0
    until_start_s: float  # outside: seconds until the next window starts; else 0


def parse_hhmm(text: str) -> int:
    """'02:00' -> 120; raises ValueError."""
    hh, sep, mm = text.partition(":")
    if not sep or not hh.isdigit() or not mm.isdigit() or len(mm) != 2:
        raise ValueError(f"{text!r}: expected HH:MM")
    h, m = int(hh), int(mm)
    if not (0 <= h <= 23 and 0 <= m <= 59):
        raise ValueError(f"{text!r}: expected HH:MM between 00:00 and 23:59")
    return h * 60 + m


def state(now_local: dt.datetime, window: Window) -> WindowState:
    midnight = now_local.replace(hour=0, minute=0, second=0, microsecond=0)
    offset_s = ((window.start_minute + window.shift_minutes) % 1440) * 60.0
    into_day = (now_local - midnight).total_seconds()
    for day in (-1, 0):  # yesterday's window may still be open
        start = day * DAY_S + offset_s
        if start <= into_day < start + window.duration_s:
            return WindowState(True, start + window.duration_s - into_day, 0.0)
    next_start = offset_s if into_day < offset_s else offset_s + DAY_S
    return WindowState(False, 0.0, next_start - into_day)
