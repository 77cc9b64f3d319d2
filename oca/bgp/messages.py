"""ExaBGP's JSON API, one message a line, read into small events (pure). ExaBGP 4.2's `encoder json`
with `receive { parsed; update; notification; }` and `neighbor-changes` writes, for example:

    {"type": "state", "neighbor": {"address": {"local": "127.0.0.2", "peer": "127.0.0.1"},
                                   "asn": {"local": 65100, "peer": 65000}, "state": "up"}, ...}
    {"type": "update", "neighbor": {..., "message": {"update": {
        "attribute": {"origin": "igp", "as-path": [65000, 65010], "med": 50, "local-preference": 100,
                      "community": [[65000, 42]], "large-community": [[65000, 1, 2]]},
        "announce": {"ipv4 unicast": {"<next hop>": [{"nlri": "192.0.2.0/24"}, ...]}},
        "withdraw": {"ipv4 unicast": [{"nlri": "198.51.100.0/24"}]}}}}}
    {"type": "update", "neighbor": {..., "message": {"eor": {"afi": "ipv4", "safi": "unicast"}}}}
    {"type": "notification", "neighbor": {..., "notification": {"code": 6, "subcode": 2, "data": ""}}}

`parse_message` returns a StateEvent, UpdateEvent, EndOfRib or Notification, None for a message we
do not use, and raises BadMessage (with what was wrong) for anything else: ExaBGP assembles its JSON
by string formatting, so the reader never trusts its shape. Prefixes are passed on as ExaBGP wrote
them; the policy (oca.bgp.policy) judges and normalises them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_LINE_BYTES = 8 << 20  # one UPDATE (at most 64 KiB on the wire) is far below this as JSON
_FAMILIES = ("ipv4 unicast", "ipv6 unicast")


class BadMessage(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Attributes:
    as_path: tuple[int, ...] = ()
    as_set: bool = False  # the path holds an AS_SET (refused by policy)
    med: int | None = None
    local_pref: int | None = None
    communities: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StateEvent:
    peer: str
    state: str  # connected | up | down
    reason: str = ""


@dataclass(frozen=True, slots=True)
class UpdateEvent:
    peer: str
    attributes: Attributes
    announced: tuple[str, ...]
    withdrawn: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EndOfRib:
    peer: str
    family: str  # "ipv4 unicast"


@dataclass(frozen=True, slots=True)
class Notification:
    peer: str
    code: int
    subcode: int
    data: str


Event = StateEvent | UpdateEvent | EndOfRib | Notification


def parse_message(line: bytes | str) -> Event | None:
    if len(line) > MAX_LINE_BYTES:
        raise BadMessage(f"line of {len(line)} bytes")
    try:
        msg = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadMessage(f"not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise BadMessage("not a JSON object")
    kind = msg.get("type")
    if kind not in ("state", "update", "notification"):
        return None  # signal, negotiated, fsm, ... (and ExaBGP's own shutdown notice)
    if "neighbor" not in msg:
        return None  # ExaBGP's own notices ({"type": "notification", "notification": "shutdown"})
    neighbor = _dict(msg.get("neighbor"), "neighbor")
    peer = _str(_dict(neighbor.get("address"), "neighbor.address").get("peer"), "neighbor.address.peer")
    if kind == "state":
        state = _str(neighbor.get("state"), "neighbor.state")
        return StateEvent(peer, state, str(neighbor.get("reason", ""))[:200])
    if kind == "notification":
        note = _dict(neighbor.get("notification"), "neighbor.notification")
        return Notification(peer, _int(note.get("code", 0), "code"), _int(note.get("subcode", 0), "subcode"),
                            str(note.get("data", ""))[:200])
    if neighbor.get("direction", "receive") != "receive":
        return None
    message = _dict(neighbor.get("message"), "neighbor.message")
    if "eor" in message:
        eor = _dict(message["eor"], "eor")
        return EndOfRib(peer, f"{eor.get('afi')} {eor.get('safi')}")
    return _update(peer, _dict(message.get("update"), "neighbor.message.update"))


def _update(peer: str, update: dict[str, Any]) -> UpdateEvent:
    attrs = _attributes(_dict(update.get("attribute", {}), "attribute"))
    announced: list[str] = []
    for family, by_next_hop in _dict(update.get("announce", {}), "announce").items():
        if family not in _FAMILIES:
            continue  # flowspec and friends: not client networks (and not negotiated)
        for routes in _dict(by_next_hop, f"announce.{family}").values():
            announced.extend(_nlri(r, family) for r in _list(routes, f"announce.{family}"))
    withdrawn: list[str] = []
    for family, routes in _dict(update.get("withdraw", {}), "withdraw").items():
        if family in _FAMILIES:
            withdrawn.extend(_nlri(r, family) for r in _list(routes, f"withdraw.{family}"))
    return UpdateEvent(peer, attrs, tuple(announced), tuple(withdrawn))


def _attributes(a: dict[str, Any]) -> Attributes:
    path = _list(a.get("as-path", []), "as-path")
    if not all(type(n) is int and 0 <= n < 1 << 32 for n in path):
        raise BadMessage("as-path: not a list of AS numbers")
    communities = [f"{c[0]}:{c[1]}" for c in _pairs(a.get("community", []), 2, "community")]
    communities += [f"{c[0]}:{c[1]}:{c[2]}" for c in _pairs(a.get("large-community", []), 3, "large-community")]
    for ext in _list(a.get("extended-community", []), "extended-community"):
        text = ext.get("string") if isinstance(ext, dict) else None
        if isinstance(text, str) and len(text) <= 64 and text.count(":") >= 1:
            communities.append(text)
    med, pref = a.get("med"), a.get("local-preference")
    return Attributes(as_path=tuple(path), as_set=bool(a.get("as-set")) or bool(a.get("confederation-set")),
                      med=None if med is None else _int(med, "med"),
                      local_pref=None if pref is None else _int(pref, "local-preference"),
                      communities=tuple(communities[:64]))


def _nlri(route: Any, family: str) -> str:
    if isinstance(route, dict) and isinstance(route.get("nlri"), str):
        return route["nlri"]
    if isinstance(route, str):  # older encoders: the prefix alone
        return route
    raise BadMessage(f"{family}: a route without nlri")


def _pairs(raw: Any, n: int, where: str) -> list[list[int]]:
    items = _list(raw, where)
    for c in items:
        if not (isinstance(c, list) and len(c) == n and all(type(x) is int and 0 <= x < 1 << 32 for x in c)):
            raise BadMessage(f"{where}: not a list of {n}-number communities")
    return items


def _dict(v: Any, where: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise BadMessage(f"{where}: not an object")
    return v


def _list(v: Any, where: str) -> list[Any]:
    if not isinstance(v, list):
        raise BadMessage(f"{where}: not a list")
    return v


def _str(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v or len(v) > 64:
        raise BadMessage(f"{where}: not a string")
    return v


def _int(v: Any, where: str) -> int:
    if type(v) is not int or not 0 <= v < 1 << 32:
        raise BadMessage(f"{where}: not an unsigned 32-bit integer")
    return v


__all__ = ["Attributes", "BadMessage", "EndOfRib", "Event", "Notification", "StateEvent", "UpdateEvent",
           "parse_message", "MAX_LINE_BYTES"]
