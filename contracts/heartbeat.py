"""The heartbeat: what every appliance POSTs (msgpack) to every steering replica each interval, and
steering's answer. Version 1 on the wire is one flat map:

    {"v": 1, "appliance_id": "ams-1", "site": "ams", "boot": "<16 hex>", "seq": 42, "sent_at": 1767225600.5,
     "accepting": true, "draining": false, "drain_reason": "",
     "load": {"loadavg": 0.7, "open_connections": 1200},
     "egress_bps": 3200000000, "capacity_bps": 10000000000,
     "disks": [{"path": "/srv/ssd0", "tier": "ssd", "state": "ok", "total_bytes": 4e12 as int,
                "free_bytes": ..., "files": 1800}],
     "popularity": {"<file key>": [requests, bytes], ...},     # decayed counters (floats)
     "inventory": {"generation": 7, "full": false, "base": 6, "added": [keys], "removed": [keys]},
     "bgp": [{"peer": "192.0.2.1", "peer_as": 64500, "state": "up", "since": 1767225000.0,
              "prefixes": 120, "refused": 2, "last_update_at": 1767225590.0 | nil}],
     "routes": nil | {"generation": 3, "full": false, "base": 2,
                      "announced": [["192.0.2.0/24", [64500, 64510], med | nil, local_pref | nil,
                                     ["64500:42", ...]], ...],
                      "withdrawn": ["198.51.100.0/24", ...]}}

`draining` is true while the appliance is drained for maintenance (`oca drain`) or shutting down; an
operator's drain carries its `drain_reason` (free text up to 200 printable characters, no control
characters; "" when not draining or when none was given), so the fleet page says why. The field is
optional on the wire: a report that predates it decodes with "".

Inventory travels whole at start (`full`: `added` is the whole set, `base` is nil) and as deltas after:
a delta turns the set at generation `base` into the set at `generation` (base == generation: nothing
changed). A replica whose generation is neither → a gap (a lost delta, a restarted replica): it answers
`need_full` and the reporter resends the whole set. Decoding validates everything and raises a
`HeartbeatError` naming the field; `status_hint` is 400.

BGP (oca.bgp): `bgp` lists the appliance's sessions with the ISP's routers; `routes` carries the
client networks it heard (its best route per prefix, after its own refusals), with the same generation
rules as the inventory and an ack of its own (`routes_ack`, `routes_need_full`): `announced` adds or
replaces a prefix's route, `withdrawn` removes it. `routes` is nil from an appliance without BGP. Both
fields are optional on the wire, so a report from an appliance that predates them still decodes.
Routes are compact arrays — a full table of 10^5 routes is a few MB — and every prefix must be in the
canonical form of contracts.netprefix.

A report is authenticated with the appliance's own key ring (keys derived for it, contracts.keys):
the header `X-CDN-Heartbeat-Signature: a=<appliance id>,k=<key id>,s=<base64url HMAC-SHA256 of
"heartbeat-v1|" + body>`. Steering derives that appliance's keys from the master, checks the header
before it reads the body whole, and then that the body names the same appliance — so no appliance can
report as another. Every report carries a `boot` id (random per reporter start) and a `seq` that
grows by one per round: steering refuses a seq that does not grow within a boot and a boot it has
seen end (`ReportSequence`), and a `sent_at` further than its allowed skew from its clock, so a
captured report cannot be replayed.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from enum import Enum
import re
from typing import Any, Callable, Mapping

import msgpack

from contracts.netprefix import parse_prefix
from contracts.ids import FILE_KEY_PATTERN, MAX_FILE_KEY_LEN, ApplianceId, FileKey, KeyId, SiteId
from contracts.token import Keyring
from contracts.wirefields import WireFields, is_number

SCHEMA_VERSION = 1
_IDENT = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SIG = re.compile(r"[A-Za-z0-9_-]{43}")
_BOOT = re.compile(r"[0-9a-f]{8,64}")
_COMMUNITY = re.compile(r"[0-9]{1,10}(:[0-9]{1,10}){1,2}|[a-z0-9-]{1,24}:[0-9a-zA-Z.:-]{1,48}")
MAX_AS_PATH = 255  # hops on the wire (an appliance refuses far shorter ones by policy)
MAX_COMMUNITIES = 64
MAX_SESSIONS = 16
MAX_DRAIN_REASON = 200  # characters
# printable text only: no C0/C1 controls, no line/paragraph separators, no lone surrogates or non-characters
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")
SESSION_STATES = ("idle", "connect", "up", "down")
_U32 = 1 << 32
CONTENT_TYPE = "application/msgpack"
SIGNATURE_HEADER = "X-CDN-Heartbeat-Signature"
_SIGNED_PREFIX = b"heartbeat-v1|"
# The grammar of contracts.ids.validate_file_key as its one regex: a full inventory holds ~10^5 keys.
_FILE_KEY = FILE_KEY_PATTERN


class HeartbeatError(ValueError):
    status_hint = 400
    reason = "heartbeat-invalid"


class MalformedHeartbeat(HeartbeatError):
    reason = "heartbeat-malformed"


class UnsupportedVersion(HeartbeatError):
    reason = "heartbeat-version"


class HeartbeatUnauthorized(HeartbeatError):
    status_hint = 401
    reason = "heartbeat-unauthorized"


class StaleHeartbeat(HeartbeatError):
    reason = "heartbeat-stale"


class ReplayedHeartbeat(HeartbeatError):
    """A seq that does not grow within its boot, or a report from a boot that has ended."""

    status_hint = 409
    reason = "heartbeat-replayed"


class DiskState(str, Enum):
    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True)
class DiskReport:
    path: str
    tier: str  # "ssd" | "hdd" (free text on the wire so a new tier needs no new schema)
    state: DiskState
    total_bytes: int
    free_bytes: int
    files: int


@dataclass(frozen=True)
class Load:
    loadavg: float  # 1-minute load average
    open_connections: int


@dataclass(frozen=True)
class HealthSnapshot:
    """What the appliance measures about itself; the reporter adds identity, sequence and inventory."""

    accepting: bool
    draining: bool
    load: Load
    egress_bps: int
    capacity_bps: int
    disks: tuple[DiskReport, ...] = ()
    popularity: Mapping[FileKey, tuple[float, float]] = field(default_factory=dict)  # (requests, bytes)
    degraded: tuple[str, ...] = ()  # background tasks that keep failing (still serving; an operator should look)
    pull_through: bool = False  # a miss sent here is fetched from the appliance's parent (steering.core.admission)
    bgp: tuple["BgpSession", ...] = ()  # the appliance's BGP sessions (oca.bgp), none without BGP
    drain_reason: str = ""  # why an operator drained it (`oca drain --reason`); "" unless draining


@dataclass(frozen=True)
class BgpSession:
    """One BGP session of an appliance as it reports it."""

    peer: str  # the router's address
    peer_as: int
    state: str  # idle | connect | up | down (down: its routes are withdrawn once the hold time has passed)
    since: float  # wall clock of the last state change
    prefixes: int  # routes accepted and held
    refused: int = 0  # routes refused by the appliance's policy (martian, too short, over the cap, ...)
    last_update_at: float | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """A client network an appliance heard, with what BGP's decision needs."""

    prefix: str  # canonical (contracts.netprefix)
    as_path: tuple[int, ...] = ()
    med: int | None = None  # MULTI_EXIT_DISC; absent counts as 0 (RFC 4271 9.1.2.2)
    local_pref: int | None = None
    communities: tuple[str, ...] = ()  # "64500:42", large "64500:1:2"


@dataclass(frozen=True)
class RoutesUpdate:
    """The appliance's routes, whole (`full`) or as a delta from generation `base` (as InventoryUpdate)."""

    generation: int
    full: bool
    announced: tuple[Route, ...] = ()
    withdrawn: tuple[str, ...] = ()
    base: int | None = None


@dataclass(frozen=True)
class InventoryUpdate:
    generation: int
    full: bool
    added: tuple[FileKey, ...] = ()
    removed: tuple[FileKey, ...] = ()
    base: int | None = None  # the generation a delta applies to; None for a full set


@dataclass(frozen=True)
class Heartbeat:
    appliance_id: ApplianceId
    site: SiteId
    seq: int
    sent_at: float
    health: HealthSnapshot
    inventory: InventoryUpdate
    boot: str = ""  # the reporter's random id for this run of it; seq counts within it
    routes: RoutesUpdate | None = None  # None: the appliance runs no BGP


@dataclass(frozen=True)
class HeartbeatAck:
    generation_ack: int | None  # the generation the replica now holds (None: nothing yet)
    need_full: bool
    status: str = "unknown"  # the replica's view of this appliance: up | down | unknown
    reason: str = ""
    routes_ack: int | None = None  # the routes generation the replica now holds
    routes_need_full: bool = False


# ---- encoding -------------------------------------------------------------------------------

def encode_heartbeat(hb: Heartbeat) -> bytes:
    h = hb.health
    inv = hb.inventory
    return msgpack.packb({
        "v": SCHEMA_VERSION, "appliance_id": hb.appliance_id, "site": hb.site, "boot": hb.boot, "seq": hb.seq,
        "sent_at": hb.sent_at, "accepting": h.accepting, "draining": h.draining, "drain_reason": h.drain_reason,
        "load": {"loadavg": h.load.loadavg, "open_connections": h.load.open_connections},
        "egress_bps": h.egress_bps, "capacity_bps": h.capacity_bps,
        "disks": [{"path": d.path, "tier": d.tier, "state": d.state.value, "total_bytes": d.total_bytes,
                   "free_bytes": d.free_bytes, "files": d.files} for d in h.disks],
        "popularity": {k: [float(r), float(b)] for k, (r, b) in h.popularity.items()},
        "degraded": list(h.degraded), "pull_through": h.pull_through,
        "inventory": {"generation": inv.generation, "full": inv.full, "base": inv.base,
                      "added": list(inv.added), "removed": list(inv.removed)},
        "bgp": [{"peer": b.peer, "peer_as": b.peer_as, "state": b.state, "since": b.since, "prefixes": b.prefixes,
                 "refused": b.refused, "last_update_at": b.last_update_at} for b in h.bgp],
        "routes": _routes_wire(hb.routes),
    })


def _routes_wire(r: RoutesUpdate | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {"generation": r.generation, "full": r.full, "base": r.base,
            "announced": [[a.prefix, list(a.as_path), a.med, a.local_pref, list(a.communities)] for a in r.announced],
            "withdrawn": list(r.withdrawn)}


def ack_to_dict(ack: HeartbeatAck) -> dict[str, Any]:
    return {"v": SCHEMA_VERSION, "generation_ack": ack.generation_ack, "need_full": ack.need_full,
            "status": ack.status, "reason": ack.reason, "routes_ack": ack.routes_ack,
            "routes_need_full": ack.routes_need_full}


def encode_ack(ack: HeartbeatAck) -> bytes:
    return msgpack.packb(ack_to_dict(ack))


def decode_ack(raw: bytes, content_type: str = CONTENT_TYPE) -> HeartbeatAck:
    try:
        data = json.loads(raw) if "json" in content_type else msgpack.unpackb(raw)
    except (ValueError, msgpack.UnpackException) as exc:
        raise MalformedHeartbeat(f"ack: not valid {content_type}: {exc}") from None
    f = _Fields(data, "ack")
    gen = f.opt_int("generation_ack")
    return HeartbeatAck(generation_ack=gen, need_full=f.bool("need_full"),
                        status=f.str("status", "unknown"), reason=f.str("reason", ""),
                        routes_ack=f.opt_int("routes_ack"), routes_need_full=f.bool("routes_need_full", False))


# ---- authentication -------------------------------------------------------------------------

def sign_body(body: bytes, keys: Keyring, appliance: str) -> str:
    """The signature header's value for an encoded report, with the appliance's own signing key."""
    return f"a={appliance},k={keys.signing_id},s={_mac(body, keys.secret(keys.signing_id))}"


def signer_of(header: str | None) -> tuple[str, KeyId, str]:
    """(appliance, key id, signature) of a signature header, checked for shape only — cheap enough to
    run before the body is read, so an unsigned or garbled report is refused unread."""
    if not header or len(header) > 256:
        raise HeartbeatUnauthorized(f"{SIGNATURE_HEADER}: required")
    params = dict(part.partition("=")[::2] for part in header.split(","))
    appliance, key_id, sig = params.get("a", ""), KeyId(params.get("k", "")), params.get("s", "")
    if not (_IDENT.fullmatch(appliance) and _IDENT.fullmatch(key_id) and _SIG.fullmatch(sig)):
        raise HeartbeatUnauthorized(f"{SIGNATURE_HEADER}: must be a=<appliance>,k=<key id>,s=<signature>")
    return appliance, key_id, sig


def verify_body(body: bytes, header: str | None, keys_for: "Callable[[str], Keyring | None]") -> tuple[str, KeyId]:
    """(appliance, key id) that signed `body`, checked with that appliance's keys (`keys_for`);
    raises HeartbeatUnauthorized (401) otherwise."""
    appliance, key_id, sig = signer_of(header)
    keys = keys_for(appliance)
    secret = keys.keys.get(key_id) if keys is not None else None
    if secret is None:
        raise HeartbeatUnauthorized(f"{SIGNATURE_HEADER}: unknown appliance or key id {appliance!r:.40}/{key_id!r:.40}")
    if not hmac.compare_digest(_mac(body, secret), sig):
        raise HeartbeatUnauthorized(f"{SIGNATURE_HEADER}: signature does not match")
    return appliance, key_id


class ReportSequence:
    """Replay protection, per appliance: the current boot and its last seq, plus the boots that
    ended (a bounded memory), so a captured report is refused however it is replayed. Pure."""

    def __init__(self, remember_boots: int = 16) -> None:
        self.remember_boots = remember_boots
        self._current: dict[str, tuple[str, int]] = {}
        self._ended: dict[str, list[str]] = {}

    def accept(self, appliance: str, boot: str, seq: int) -> None:
        current = self._current.get(appliance)
        if current is not None and current[0] == boot:
            if seq <= current[1]:
                raise ReplayedHeartbeat(f"seq: {seq} is not above {current[1]} (boot {boot})")
        elif boot in self._ended.get(appliance, ()):
            raise ReplayedHeartbeat(f"boot: {boot!r} has ended (the reporter restarted since)")
        elif current is not None:
            ended = self._ended.setdefault(appliance, [])
            ended.append(current[0])
            del ended[:-self.remember_boots]
        self._current[appliance] = (boot, seq)


def check_fresh(hb: "Heartbeat", now: float, max_skew_s: float) -> None:
    """Refuse a report sent too long ago (a replay) or from a clock too far ahead."""
    if abs(now - hb.sent_at) > max_skew_s:
        raise StaleHeartbeat(f"sent_at: {hb.sent_at:.0f} is more than {max_skew_s:.0f} s from {now:.0f}")


def _mac(body: bytes, secret: bytes) -> str:
    digest = hmac.new(secret, _SIGNED_PREFIX + body, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# ---- decoding -------------------------------------------------------------------------------

def decode_heartbeat(raw: bytes) -> Heartbeat:
    """Parse and validate one report; raise HeartbeatError naming the first bad field."""
    try:
        data = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise MalformedHeartbeat(f"not valid msgpack: {exc}") from None
    f = _Fields(data, "")
    version = data.get("v") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise UnsupportedVersion(f"v: schema version {version!r} not supported (want {SCHEMA_VERSION})")
    load = _Fields(f.raw("load"), "load")
    draining = f.bool("draining")
    health = HealthSnapshot(
        accepting=f.bool("accepting"), draining=draining, drain_reason=_drain_reason(f.raw("drain_reason", ""), draining),
        load=Load(loadavg=load.number("loadavg"), open_connections=load.count("open_connections")),
        egress_bps=f.count("egress_bps"), capacity_bps=f.count("capacity_bps"),
        disks=tuple(_disk(d, f"disks[{i}]") for i, d in enumerate(f.list("disks"))),
        popularity=_popularity(f.raw("popularity", {})),
        degraded=_degraded(f.raw("degraded", [])),
        pull_through=f.bool("pull_through", False),
        bgp=_sessions(f.raw("bgp", [])),
    )
    routes = f.raw("routes", None)
    return Heartbeat(
        appliance_id=ApplianceId(f.ident("appliance_id")), site=SiteId(f.ident("site")),
        boot=_boot(f.str("boot")), seq=f.count("seq"), sent_at=f.number("sent_at"), health=health,
        inventory=_inventory(_Fields(f.raw("inventory"), "inventory")),
        routes=None if routes is None else _routes(_Fields(routes, "routes")),
    )


def _sessions(raw: Any) -> tuple[BgpSession, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_SESSIONS:
        raise MalformedHeartbeat(f"bgp: must be a list of at most {MAX_SESSIONS} sessions")
    out = []
    for i, item in enumerate(raw):
        f, where = _Fields(item, f"bgp[{i}]"), f"bgp[{i}]"
        peer, state, peer_as = f.str("peer"), f.str("state"), f.count("peer_as")
        if len(peer) > 64:
            raise MalformedHeartbeat(f"{where}.peer: at most 64 characters")
        if state not in SESSION_STATES:
            raise MalformedHeartbeat(f"{where}.state: must be one of {', '.join(SESSION_STATES)}")
        if peer_as >= _U32:
            raise MalformedHeartbeat(f"{where}.peer_as: must be below 2^32")
        last = f.raw("last_update_at", None)
        out.append(BgpSession(peer=peer, peer_as=peer_as, state=state, since=f.number("since"),
                              prefixes=f.count("prefixes"), refused=f.count("refused"),
                              last_update_at=None if last is None else f.number("last_update_at")))
    return tuple(out)


def _routes(f: "_Fields") -> RoutesUpdate:
    full, base, generation = f.bool("full"), f.opt_int("base"), f.count("generation")
    if not full and base is None:
        raise MalformedHeartbeat("routes.base: required in a delta")
    if base is not None and base > generation:
        raise MalformedHeartbeat("routes.base: must not be above routes.generation")
    announced = tuple(_route(r, i) for i, r in enumerate(f.list("announced")))
    withdrawn = f.list("withdrawn")
    for i, prefix in enumerate(withdrawn):
        _prefix(prefix, f"routes.withdrawn[{i}]")
    if full and withdrawn:
        raise MalformedHeartbeat("routes.withdrawn: must be empty in a full table")
    return RoutesUpdate(generation=generation, full=full, announced=announced, withdrawn=tuple(withdrawn),
                        base=None if full else base)


def _route(raw: Any, i: int) -> Route:
    where = f"routes.announced[{i}]"
    if not isinstance(raw, list) or len(raw) != 5:
        raise MalformedHeartbeat(f"{where}: must be [prefix, as_path, med, local_pref, communities]")
    prefix, path, med, local_pref, communities = raw
    _prefix(prefix, f"{where}[0]")
    if (not isinstance(path, list) or len(path) > MAX_AS_PATH
            or not all(type(a) is int and 0 <= a < _U32 for a in path)):
        raise MalformedHeartbeat(f"{where}[1]: the AS path must be at most {MAX_AS_PATH} AS numbers below 2^32")
    for j, value in ((2, med), (3, local_pref)):
        if value is not None and not (type(value) is int and 0 <= value < _U32):
            raise MalformedHeartbeat(f"{where}[{j}]: must be nil or an integer below 2^32")
    if (not isinstance(communities, list) or len(communities) > MAX_COMMUNITIES
            or not all(isinstance(c, str) and _COMMUNITY.fullmatch(c) for c in communities)):
        raise MalformedHeartbeat(f"{where}[4]: communities must be at most {MAX_COMMUNITIES} "
                                 "like \"64500:42\" or \"64500:1:2\"")
    return Route(prefix, tuple(path), med, local_pref, tuple(communities))


def _prefix(raw: Any, where: str) -> None:
    try:
        parse_prefix(raw)
    except ValueError as exc:
        raise MalformedHeartbeat(f"{where}: not a canonical IP network ({exc})") from None


def _disk(raw: Any, where: str) -> DiskReport:
    f = _Fields(raw, where)
    state = f.str("state")
    if state not in ("ok", "failed"):
        raise MalformedHeartbeat(f"{where}.state: must be 'ok' or 'failed'")
    return DiskReport(path=f.str("path"), tier=f.str("tier"), state=DiskState(state),
                      total_bytes=f.count("total_bytes"), free_bytes=f.count("free_bytes"),
                      files=f.count("files"))


def check_drain_reason(raw: Any) -> str:
    """An operator's drain reason as the wire carries it; ValueError naming the rule otherwise (the
    appliance checks what an operator typed with this too, so it never sends what steering refuses)."""
    if not isinstance(raw, str) or len(raw) > MAX_DRAIN_REASON or _UNPRINTABLE.search(raw):
        raise ValueError(f"drain_reason: at most {MAX_DRAIN_REASON} printable characters (no control characters)")
    return raw


def _drain_reason(raw: Any, draining: bool) -> str:
    try:
        reason = check_drain_reason(raw)
    except ValueError as exc:
        raise MalformedHeartbeat(str(exc)) from None
    if reason and not draining:
        raise MalformedHeartbeat("drain_reason: must be empty unless draining")
    return reason


def _boot(raw: str) -> str:
    if not _BOOT.fullmatch(raw):
        raise MalformedHeartbeat("boot: must be 8-64 hex digits")
    return raw


def _degraded(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or len(raw) > 64 or not all(isinstance(t, str) and len(t) <= 64 for t in raw):
        raise MalformedHeartbeat("degraded: must be a list of at most 64 task names")
    return tuple(raw)


def _popularity(raw: Any) -> dict[FileKey, tuple[float, float]]:
    if not isinstance(raw, dict):
        raise MalformedHeartbeat("popularity: must be a map")
    out: dict[FileKey, tuple[float, float]] = {}
    for key, value in raw.items():
        where = f"popularity[{key!r}]"
        _check_key(key, where)
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(is_number(v) and v >= 0 for v in value)):
            raise MalformedHeartbeat(f"{where}: must be [requests, bytes], two non-negative numbers")
        out[FileKey(key)] = (float(value[0]), float(value[1]))
    return out


def _inventory(f: "_Fields") -> InventoryUpdate:
    full = f.bool("full")
    base = f.opt_int("base")
    generation = f.count("generation")
    if not full and base is None:
        raise MalformedHeartbeat("inventory.base: required in a delta")
    if base is not None and base > generation:
        raise MalformedHeartbeat("inventory.base: must not be above inventory.generation")
    added = _keys(f.list("added"), "inventory.added")
    removed = _keys(f.list("removed"), "inventory.removed")
    if full and removed:
        raise MalformedHeartbeat("inventory.removed: must be empty in a full inventory")
    return InventoryUpdate(generation=generation, full=full, added=added, removed=removed,
                           base=None if full else base)


def _keys(raw: list[Any], where: str) -> tuple[FileKey, ...]:
    match = _FILE_KEY.fullmatch
    for i, key in enumerate(raw):
        if not isinstance(key, str) or len(key) > MAX_FILE_KEY_LEN or match(key) is None:
            raise MalformedHeartbeat(f"{where}[{i}]: not a valid file key: {key!r:.80}")
    return tuple(raw)


def _check_key(key: Any, where: str) -> None:
    if not isinstance(key, str) or len(key) > MAX_FILE_KEY_LEN or _FILE_KEY.fullmatch(key) is None:
        raise MalformedHeartbeat(f"{where}: not a valid file key")




class _Fields(WireFields):
    """A heartbeat's wire map."""

    error = MalformedHeartbeat
