"""The heartbeat: what every appliance POSTs (msgpack) to every steering replica each interval, and
steering's answer. Version 1 on the wire is one flat map:

    {"v": 1, "appliance_id": "ams-1", "site": "ams", "boot": "<16 hex>", "seq": 42, "sent_at": 1767225600.5,
     "accepting": true, "draining": false, "drain_reason": "",
     "load": {"loadavg": 0.7, "open_connections": 1200},
     "egress_bps": 3200000000, "capacity_bps": 10000000000,
     "disks": [{"path": "/srv/ssd0", "tier": "ssd", "state": "ok", "total_bytes": 4e12 as int,
                "free_bytes": ..., "files": 1800}],
     "popularity": {"<file key>": [requests, bytes], ...},     # decayed counters (floats)
     "degraded": ["<task>", ...], "pull_through": false,
     "inventory": {"generation": 7, "full": false, "base": 6, "added": [keys], "removed": [keys]},
     "bgp": [{"peer": "192.0.2.1", "peer_as": 64500, "state": "up", "since": 1767225000.0,
              "prefixes": 120, "refused": 2, "last_update_at": 1767225590.0 | nil}],
     "routes": nil | {"generation": 3, "full": false, "base": 2,
                      "announced": [["192.0.2.0/24", [64500, 64510], med | nil, local_pref | nil,
                                     ["64500:42", ...]], ...],
                      "withdrawn": ["198.51.100.0/24", ...]}}

Decoding is one pass of a cached msgspec Decoder over wire-shaped Structs (`_Report`, `_Inventory`,
`_Routes`: keys in the order older encoders wrote them, so v1 bytes stay v1 bytes) holding the domain's
own leaf Structs (`Load`, `DiskReport`, `BgpSession`, `Route`); msgspec checks types and bounds, and
what types cannot say (a delta needs a base, the file-key grammar, canonical prefixes, ...) is checked
as the report becomes a `Heartbeat`. Unknown keys are ignored (a newer appliance may send more); a
field with a default may be absent and takes the domain class's default.

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
import re
from dataclasses import MISSING, dataclass, field
from enum import Enum
from typing import Annotated, Any, Callable, Literal, Mapping, get_args

import msgpack
import msgspec
from msgspec import Meta

from contracts.ids import FILE_KEY_PATTERN, MAX_FILE_KEY_LEN, ApplianceId, FileKey, KeyId, SiteId
from contracts.netprefix import parse_prefix
from contracts.structconf import explain
from contracts.wirejson import Amount, Count, Ident, matching
from contracts.token import Keyring

SCHEMA_VERSION = 1
_IDENT = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SIG = re.compile(r"[A-Za-z0-9_-]{43}")
MAX_AS_PATH = 255  # hops on the wire (an appliance refuses far shorter ones by policy)
MAX_COMMUNITIES = 64
MAX_SESSIONS = 16
MAX_DRAIN_REASON = 200  # characters
# printable text only: no C0/C1 controls, no line/paragraph separators, no lone surrogates or non-characters
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")
CONTENT_TYPE = "application/msgpack"
SIGNATURE_HEADER = "X-CDN-Heartbeat-Signature"
_SIGNED_PREFIX = b"heartbeat-v1|"
# The grammar of contracts.ids.validate_file_key as its one regex: a full inventory holds ~10^5 keys.
# (Checked in a loop after decoding: a Meta pattern on the items measured 2.5x slower.)
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


# ---- what the wire's values may be (checked by msgspec when decoding, not when building) ----------

U32 = Annotated[int, Meta(ge=0, lt=1 << 32)]
TaskName = Annotated[str, Meta(max_length=64)]
Boot = matching("[0-9a-f]{8,64}", "must be 8-64 hex digits")
# "64500:42", large "64500:1:2", extended "rt:64500:7"
Community = matching("[0-9]{1,10}(:[0-9]{1,10}){1,2}|[a-z0-9-]{1,24}:[0-9a-zA-Z.:-]{1,48}",
                     'must be like "64500:42" or "64500:1:2"')
SessionState = Literal["idle", "connect", "up", "down"]
SESSION_STATES = get_args(SessionState)


class DiskState(str, Enum):
    OK = "ok"
    FAILED = "failed"


class Load(msgspec.Struct, frozen=True, gc=False):
    loadavg: Amount  # 1-minute load average
    open_connections: Count


class DiskReport(msgspec.Struct, frozen=True, gc=False):
    path: str
    tier: str  # "ssd" | "hdd" (free text on the wire so a new tier needs no new schema)
    state: DiskState
    total_bytes: Count
    free_bytes: Count
    files: Count


class BgpSession(msgspec.Struct, frozen=True, gc=False):
    """One BGP session of an appliance as it reports it."""

    peer: Annotated[str, Meta(max_length=64)]  # the router's address
    peer_as: U32
    state: SessionState  # down: its routes are withdrawn once the hold time has passed
    since: Amount  # wall clock of the last state change
    prefixes: Count  # routes accepted and held
    refused: Count = 0  # routes refused by the appliance's policy (martian, too short, over the cap, ...)
    last_update_at: Amount | None = None


class Route(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True, gc=False):
    """A client network an appliance heard, with what BGP's decision needs; on the wire the array
    [prefix, as_path, med, local_pref, communities]."""

    prefix: str  # canonical (contracts.netprefix)
    as_path: Annotated[tuple[U32, ...], Meta(max_length=MAX_AS_PATH)] = ()
    med: U32 | None = None  # MULTI_EXIT_DISC; absent counts as 0 (RFC 4271 9.1.2.2)
    local_pref: U32 | None = None
    communities: Annotated[tuple[Community, ...], Meta(max_length=MAX_COMMUNITIES)] = ()


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
    bgp: tuple[BgpSession, ...] = ()  # the appliance's BGP sessions (oca.bgp), none without BGP
    drain_reason: str = ""  # why an operator drained it (`oca drain --reason`); "" unless draining


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


class HeartbeatAck(msgspec.Struct, frozen=True, tag_field="v", tag=SCHEMA_VERSION):
    """Steering's answer, as it travels: {"v": 1, "generation_ack": ..., ...} (msgpack, or JSON)."""

    generation_ack: Count | None  # the generation the replica now holds (None: nothing yet)
    need_full: bool
    status: str = "unknown"  # the replica's view of this appliance: up | down | unknown
    reason: str = ""
    routes_ack: Count | None = None  # the routes generation the replica now holds
    routes_need_full: bool = False


# ---- the wire's envelope --------------------------------------------------------------------

def _default(cls: type, name: str) -> Any:
    """A domain dataclass's default for a field: what the wire means when the field is absent."""
    f = cls.__dataclass_fields__[name]  # type: ignore[attr-defined]
    return f.default if f.default is not MISSING else f.default_factory()


def _base(where: str, full: bool, base: int | None, generation: int) -> None:
    if not full and base is None:
        raise MalformedHeartbeat(f"{where}.base: required in a delta")
    if base is not None and base > generation:
        raise MalformedHeartbeat(f"{where}.base: must not be above {where}.generation")


class _Inventory(msgspec.Struct, kw_only=True):
    generation: Count
    full: bool
    base: Count | None = _default(InventoryUpdate, "base")
    added: tuple[str, ...]
    removed: tuple[str, ...]

    @classmethod
    def of(cls, u: InventoryUpdate) -> _Inventory:
        return cls(generation=u.generation, full=u.full, base=u.base, added=u.added, removed=u.removed)

    def update(self) -> InventoryUpdate:
        _base("inventory", self.full, self.base, self.generation)
        _file_keys(self.added, "inventory.added")
        _file_keys(self.removed, "inventory.removed")
        if self.full and self.removed:
            raise MalformedHeartbeat("inventory.removed: must be empty in a full inventory")
        return InventoryUpdate(generation=self.generation, full=self.full, added=self.added, removed=self.removed,
                               base=None if self.full else self.base)


class _Routes(msgspec.Struct, kw_only=True):
    generation: Count
    full: bool
    base: Count | None = _default(RoutesUpdate, "base")
    announced: tuple[Route, ...]
    withdrawn: tuple[str, ...]

    @classmethod
    def of(cls, u: RoutesUpdate | None) -> _Routes | None:
        if u is None:
            return None
        return cls(generation=u.generation, full=u.full, base=u.base, announced=u.announced, withdrawn=u.withdrawn)

    def update(self) -> RoutesUpdate:
        _base("routes", self.full, self.base, self.generation)
        for i, route in enumerate(self.announced):
            _prefix(route.prefix, f"routes.announced[{i}][0]")
        for i, prefix in enumerate(self.withdrawn):
            _prefix(prefix, f"routes.withdrawn[{i}]")
        if self.full and self.withdrawn:
            raise MalformedHeartbeat("routes.withdrawn: must be empty in a full table")
        return RoutesUpdate(generation=self.generation, full=self.full, announced=self.announced,
                            withdrawn=self.withdrawn, base=None if self.full else self.base)


class _Report(msgspec.Struct, kw_only=True):
    """Version 1 on the wire, field for field in the order older encoders wrote; a field absent in
    older reports defaults as the domain's own class does."""

    v: Literal[1]  # SCHEMA_VERSION
    appliance_id: Ident
    site: Ident
    boot: Boot
    seq: Count
    sent_at: Amount
    accepting: bool
    draining: bool
    drain_reason: str = _default(HealthSnapshot, "drain_reason")  # its rules: check_drain_reason
    load: Load
    egress_bps: Count
    capacity_bps: Count
    disks: tuple[DiskReport, ...]
    popularity: dict[str, tuple[Amount, Amount]] = _default(HealthSnapshot, "popularity")  # keys: file keys
    degraded: Annotated[tuple[TaskName, ...], Meta(max_length=64)] = _default(HealthSnapshot, "degraded")
    pull_through: bool = _default(HealthSnapshot, "pull_through")
    inventory: _Inventory
    bgp: Annotated[tuple[BgpSession, ...], Meta(max_length=MAX_SESSIONS)] = _default(HealthSnapshot, "bgp")
    routes: _Routes | None = _default(Heartbeat, "routes")

    @classmethod
    def of(cls, hb: Heartbeat) -> _Report:
        h = hb.health
        popularity = h.popularity if type(h.popularity) is dict else dict(h.popularity)
        return cls(v=SCHEMA_VERSION, appliance_id=hb.appliance_id, site=hb.site, boot=hb.boot, seq=hb.seq,
                   sent_at=hb.sent_at, accepting=h.accepting, draining=h.draining, drain_reason=h.drain_reason,
                   load=h.load, egress_bps=h.egress_bps, capacity_bps=h.capacity_bps, disks=h.disks,
                   popularity=popularity, degraded=h.degraded, pull_through=h.pull_through,
                   inventory=_Inventory.of(hb.inventory), bgp=h.bgp, routes=_Routes.of(hb.routes))

    def heartbeat(self) -> Heartbeat:
        """The domain's view, once what types cannot say is checked."""
        _drain_reason(self.drain_reason, self.draining)
        _file_keys(self.popularity, "popularity", indexed=False)
        health = HealthSnapshot(
            accepting=self.accepting, draining=self.draining, load=self.load, egress_bps=self.egress_bps,
            capacity_bps=self.capacity_bps, disks=self.disks, popularity=self.popularity, degraded=self.degraded,
            pull_through=self.pull_through, bgp=self.bgp, drain_reason=self.drain_reason)
        return Heartbeat(appliance_id=ApplianceId(self.appliance_id), site=SiteId(self.site), seq=self.seq,
                         sent_at=self.sent_at, health=health, inventory=self.inventory.update(), boot=self.boot,
                         routes=None if self.routes is None else self.routes.update())


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_Report)
_ACK_DECODERS = {"msgpack": msgspec.msgpack.Decoder(HeartbeatAck), "json": msgspec.json.Decoder(HeartbeatAck)}


# ---- encoding -------------------------------------------------------------------------------

def encode_heartbeat(hb: Heartbeat) -> bytes:
    return _ENCODER.encode(_Report.of(hb))


def ack_to_dict(ack: HeartbeatAck) -> dict[str, Any]:
    return msgspec.to_builtins(ack)


def encode_ack(ack: HeartbeatAck) -> bytes:
    return _ENCODER.encode(ack)


def decode_ack(raw: bytes, content_type: str = CONTENT_TYPE) -> HeartbeatAck:
    kind = "json" if "json" in content_type else "msgpack"
    try:
        return _ACK_DECODERS[kind].decode(raw)
    except msgspec.DecodeError as exc:  # cold path: read it again to say what is wrong, and where
        try:
            data = msgspec.json.decode(raw) if kind == "json" else msgpack.unpackb(raw)
        except (ValueError, msgspec.DecodeError, msgpack.UnpackException) as again:
            raise MalformedHeartbeat(f"ack: not valid {content_type}: {again}") from None
        if isinstance(data, dict) and (unsupported := _version(data.get("v", SCHEMA_VERSION), "ack.")):
            raise unsupported from None  # an older replica may leave `v` out
        if not isinstance(exc, msgspec.ValidationError):
            raise MalformedHeartbeat(f"ack: not valid {content_type}: {exc}") from None
        raise MalformedHeartbeat(_explain(exc, HeartbeatAck, data, "ack")) from None


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
        report = _DECODER.decode(raw)
    except msgspec.DecodeError as exc:
        raise _refusal(exc, raw) from None
    return report.heartbeat()


def _refusal(exc: msgspec.DecodeError, raw: bytes) -> HeartbeatError:
    """What is wrong with a report msgspec refused, found by reading it again (the cold path)."""
    try:
        data = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as again:
        return MalformedHeartbeat(f"not valid msgpack: {again}")
    if not isinstance(data, dict):
        return MalformedHeartbeat("(top level): must be a map")
    if unsupported := _version(data.get("v")):
        return unsupported
    if not isinstance(exc, msgspec.ValidationError):
        return MalformedHeartbeat(f"not valid msgpack: {exc}")
    if "$.popularity" in str(exc):
        return MalformedHeartbeat(_popularity_error(data.get("popularity")))
    return MalformedHeartbeat(_explain(exc, _Report, data))


_ROUTE = re.compile(r"^(routes\.announced\[\d+\])(?:\[(\d)\])?")
_ROUTE_WORDS = ("must be [prefix, as_path, med, local_pref, communities]",
                "not a canonical IP network (not a string)",
                f"the AS path must be at most {MAX_AS_PATH} AS numbers below 2^32",
                "must be nil or an integer below 2^32", "must be nil or an integer below 2^32",
                f'communities must be at most {MAX_COMMUNITIES} like "64500:42" or "64500:1:2"')


def _version(v: Any, where: str = "") -> UnsupportedVersion | None:
    if type(v) is int and v == SCHEMA_VERSION:
        return None
    return UnsupportedVersion(f"{where}v: schema version {v!r:.20} not supported (want {SCHEMA_VERSION})")


def _explain(exc: msgspec.ValidationError, cls: type, data: Any, where: str = "") -> str:
    """structconf.explain in the wire's words (maps, not tables); a route's elements by their place."""
    text = explain(exc, cls, data, where=where, noun="map")
    if text.startswith("routes.announced: "):
        return f"routes.announced: must be an array of routes, each {_ROUTE_WORDS[0].removeprefix('must be ')}"
    if m := _ROUTE.match(text):  # an element of a route (an array-like Struct): by its place
        return f"{m[0]}: {_ROUTE_WORDS[0 if m[2] is None else int(m[2]) + 1]}"
    return text


def _popularity_error(raw: Any) -> str:
    """Which entry of the map is wrong (msgspec says "[...]"; the keys are strings: msgpack.unpackb
    refused any other)."""
    if not isinstance(raw, dict):
        return "popularity: must be a map"
    for key, value in raw.items():
        try:
            msgspec.convert(value, tuple[Amount, Amount])
        except msgspec.ValidationError:
            return f"popularity[{key!r:.80}]: must be [requests, bytes], two non-negative numbers"
    return "popularity: must map file keys to [requests, bytes]"


def _file_keys(keys: Any, where: str, indexed: bool = True) -> None:
    """Every key in the grammar of contracts.ids (an iterable of str: a tuple, or a dict's keys)."""
    match = _FILE_KEY.fullmatch
    for i, key in enumerate(keys):
        if len(key) > MAX_FILE_KEY_LEN or match(key) is None:
            at = f"[{i}]: not a valid file key: {key!r:.80}" if indexed else f"[{key!r:.80}]: not a valid file key"
            raise MalformedHeartbeat(where + at)


def _prefix(raw: str, where: str) -> None:
    try:
        parse_prefix(raw)
    except ValueError as exc:
        raise MalformedHeartbeat(f"{where}: not a canonical IP network ({exc})") from None


def check_drain_reason(raw: Any) -> str:
    """An operator's drain reason as the wire carries it; ValueError naming the rule otherwise (the
    appliance checks what an operator typed with this too, so it never sends what steering refuses)."""
    if not isinstance(raw, str) or len(raw) > MAX_DRAIN_REASON or _UNPRINTABLE.search(raw):
        raise ValueError(f"drain_reason: at most {MAX_DRAIN_REASON} printable characters (no control characters)")
    return raw


def _drain_reason(raw: str, draining: bool) -> None:
    try:
        check_drain_reason(raw)
    except ValueError as exc:
        raise MalformedHeartbeat(str(exc)) from None
    if raw and not draining:
        raise MalformedHeartbeat("drain_reason: must be empty unless draining")
