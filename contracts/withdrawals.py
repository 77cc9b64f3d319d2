"""Withdrawn titles and title versions, fleet-wide: an append-only log in the control store (the store
`fill plan` writes its manifests to and steering's `[fill] origin` reads), one object per event:

    withdrawals/<UTC time, microseconds>Z-<16 hex>.json
    {"v": 1, "action": "withdraw" | "undo", "title": "t1", "version": "v0123456789abcdef" | null,
     "reason": "bad encode (CONTENT-12)", "by": "content-team", "at": 1767225600.123456}

`version` null means every version of the title. Steering writes an event when a caller with the role
`withdraw` asks (POST /v1/withdrawals: `by` is that caller's name from the callers file, never a name
the caller typed); every replica, the planner and (through steering) playback read the log. Objects
are never rewritten, so two replicas recording at once lose nothing (no read-modify-write), and the
events are the audit list: who, when, why, in order. Folding them in key order (time first) gives
what is withdrawn now: a `withdraw` adds (title, version), an `undo` removes exactly that pair.

A file key is covered when it lies under a withdrawn title or version: `files/<title>/` or
`files/<title>/<version>/` (the origin's layout, origin.core.layout; tests hold the two together).
Decoding validates everything and raises WithdrawalError naming the field. Pure.

Strategy: an event object is the msgspec Struct `_Stored` (tagged "v", unknown fields refused), which
msgspec decodes and type-checks in one pass (contracts.wirejson); `Event` adds the key it was read from.
The rules on titles, versions, reasons and callers are the `check_*` functions, applied on decoding
(the same ones steering applies to a request), not when a reader builds an Event from steering's list.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, get_args

import msgspec

from contracts import wirejson
from contracts.wirejson import Amount

SCHEMA_VERSION = 1
PREFIX = "withdrawals/"
FILES_PREFIX = "files/"  # origin.core.layout.FILES_PREFIX: files/<title>/<version>/<name>
Action = Literal["withdraw", "undo"]
ACTIONS: tuple[str, ...] = get_args(Action)
MAX_REASON = 300  # characters
MAX_EVENT_BYTES = 4096
_TITLE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")  # contracts.catalog's title id
_VERSION = re.compile(r"v[0-9a-f]{16}")  # origin.core.layout's content version
_BY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,127}")  # a caller's name ("appliance:ams-1" has a colon)
_KEY = re.compile(r"withdrawals/[0-9]{8}T[0-9]{6}\.[0-9]{6}Z-[0-9a-f]{16}\.json")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")


class WithdrawalError(ValueError):
    status_hint = 400
    reason = "bad-withdrawal"


class _Stored(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="v", tag=SCHEMA_VERSION):
    """One event object as stored."""

    action: Action
    title: str
    version: str | None  # None: every version of the title
    reason: str
    by: str  # the authenticated caller
    at: Amount  # unix seconds


class Event(_Stored, frozen=True):
    key: str = ""  # the object it was read from (or will be written to)

    @property
    def target(self) -> str:
        return self.title if self.version is None else f"{self.title}/{self.version}"

    def public(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _Stored.__struct_fields__}


_DECODER = wirejson.decoder(_Stored)


@dataclass(frozen=True)
class Withdrawals:
    """What is withdrawn now (by (title, version); version None = the whole title) and the audit list."""

    active: Mapping[tuple[str, str | None], Event] = field(default_factory=dict)
    events: tuple[Event, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.active)

    def find(self, title: str, version: str | None) -> Event | None:
        """The event that withdrew this title (any version) or this very version, if any."""
        return self.active.get((title, None)) or (self.active.get((title, version)) if version else None)

    def covers(self, key: str) -> Event | None:
        """The withdrawal a file key falls under (files/<title>/<version>/...), or None."""
        if not self.active or not key.startswith(FILES_PREFIX):
            return None
        parts = key.split("/", 3)
        if len(parts) < 3:
            return None
        return self.find(parts[1], parts[2] if len(parts) == 4 else None)

    def public(self) -> dict[str, Any]:
        return {"v": SCHEMA_VERSION, "withdrawn": [e.public() for e in self.active.values()],
                "audit": [e.public() for e in self.events]}


EMPTY = Withdrawals()


def parse_target(text: str) -> tuple[str, str | None]:
    """`TITLE` or `TITLE/VERSION` as an operator writes it."""
    title, sep, version = text.partition("/")
    return check_title(title, "title"), (check_version(version, "version") if sep else None)


def check_title(raw: Any, where: str = "title") -> str:
    if not isinstance(raw, str) or not _TITLE.fullmatch(raw) or raw.endswith(".json"):
        raise WithdrawalError(f"{where}: a title id (1-128 of [A-Za-z0-9_.-], starting with a letter or digit)")
    return raw


def check_version(raw: Any, where: str = "version") -> str:
    if not isinstance(raw, str) or not _VERSION.fullmatch(raw):
        raise WithdrawalError(f"{where}: a version (v and 16 hex digits, as the catalog names it)")
    return raw


def check_reason(raw: Any, where: str = "reason") -> str:
    if (not isinstance(raw, str) or not raw.strip() or len(raw) > MAX_REASON or _UNPRINTABLE.search(raw)):
        raise WithdrawalError(f"{where}: required, at most {MAX_REASON} printable characters")
    return raw


def check_by(raw: Any, where: str = "by") -> str:
    if not isinstance(raw, str) or not _BY.fullmatch(raw):
        raise WithdrawalError(f"{where}: a caller's name")
    return raw


def event_key(at: float, nonce: str) -> str:
    """withdrawals/<UTC time with microseconds>Z-<nonce>.json: keys sort by time."""
    stamp = dt.datetime.fromtimestamp(at, dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%f")
    key = f"{PREFIX}{stamp}Z-{nonce}.json"
    if not _KEY.fullmatch(key):
        raise WithdrawalError("nonce: 16 lowercase hex digits")
    return key


def is_event_key(key: str) -> bool:
    return _KEY.fullmatch(key) is not None


def new_event(action: str, title: str, version: str | None, reason: str, by: str, at: float, nonce: str) -> Event:
    if action not in ACTIONS:
        raise WithdrawalError(f"action: one of {', '.join(ACTIONS)}")
    return Event(action, check_title(title), None if version is None else check_version(version),
                 check_reason(reason), check_by(by), float(at), event_key(at, nonce))


def encode_event(e: Event) -> bytes:
    return json.dumps({"v": SCHEMA_VERSION, **e.public()}, separators=(",", ":"), ensure_ascii=False).encode()


def decode_event(raw: bytes, key: str) -> Event:
    """One event object; WithdrawalError naming the field (and the object)."""
    if not is_event_key(key):
        raise WithdrawalError(f"{key[:120]!r}: not an event's key")
    if len(raw) > MAX_EVENT_BYTES:
        raise WithdrawalError(f"{key}: larger than {MAX_EVENT_BYTES} bytes")

    def schema(data: Any) -> None:
        if not isinstance(data, dict):
            raise WithdrawalError(f"{key}: must be an object")
        if data.get("v") != SCHEMA_VERSION:
            raise WithdrawalError(f"{key}: v: schema version {data.get('v')!r} not supported")

    e = wirejson.decode(_DECODER, raw, WithdrawalError, label=key, where=key, first=schema)
    return Event(e.action, check_title(e.title, f"{key}.title"),
                 None if e.version is None else check_version(e.version, f"{key}.version"),
                 check_reason(e.reason, f"{key}.reason"), check_by(e.by, f"{key}.by"), e.at, key)


def fold(events: Iterable[Event]) -> Withdrawals:
    """The log, in key order, as what is withdrawn now plus the audit list."""
    ordered = tuple(sorted(events, key=lambda e: e.key))
    active: dict[tuple[str, str | None], Event] = {}
    for e in ordered:
        if e.action == "withdraw":
            active.setdefault((e.title, e.version), e)  # withdrawn twice: the first says since when
        else:
            active.pop((e.title, e.version), None)
    return Withdrawals(active, ordered)


__all__ = ["Event", "Withdrawals", "WithdrawalError", "EMPTY", "PREFIX", "FILES_PREFIX", "ACTIONS", "parse_target",
           "check_title", "check_version", "check_reason", "check_by", "event_key", "is_event_key", "new_event",
           "encode_event", "decode_event", "fold", "SCHEMA_VERSION"]
