"""The heartbeat wire schema (contracts.heartbeat): round trips, and every malformed report refused
with a HeartbeatError (status_hint 400) that names the field."""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import msgpack
import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from contracts.keys import derive_keyring
from contracts.heartbeat import (BgpSession, DiskReport, DiskState, HealthSnapshot, Heartbeat, InventoryUpdate, Load,
                                 Route, RoutesUpdate)
from contracts.heartbeat import (HeartbeatAck, HeartbeatError, HeartbeatUnauthorized, MalformedHeartbeat,
                                 StaleHeartbeat, UnsupportedVersion, ack_to_dict, check_fresh, decode_ack,
                                 decode_heartbeat, encode_ack, encode_heartbeat, sign_body, verify_body,
                                 ReplayedHeartbeat, ReportSequence)
from contracts.ids import KeyId
from contracts.token import Keyring
from contracts.ids import is_valid_file_key
from steer_helpers import heartbeat


ROUTES = RoutesUpdate(generation=5, full=False, base=4,
                      announced=(Route("192.0.2.0/24", (64500, 64510), 50, 100, ("64500:42", "64500:1:2")),
                                 Route("2001:db8:a::/48")),
                      withdrawn=("198.51.100.0/24",))
SESSIONS = (BgpSession("192.0.2.1", 64500, "up", 1767225000.0, 2, 1, 1767225590.0),
            BgpSession("2001:db8::1", 64500, "down", 1767225100.0, 0))


def with_bgp(hb, routes: RoutesUpdate | None = ROUTES):
    return replace(hb, routes=routes, health=replace(hb.health, bgp=SESSIONS))


def wire(**changes: Any) -> bytes:
    data = msgpack.unpackb(encode_heartbeat(with_bgp(heartbeat("ams-1", "ams", added=["t/a.mp4", "t/b.mp4"]))))
    for dotted, value in changes.items():
        target = data
        *path, last = dotted.split("__")
        for part in path:
            target = target[int(part)] if isinstance(target, list) else target[part]
        index = int(last) if isinstance(target, list) else last
        if value is DELETE:
            del target[index]
        else:
            target[index] = value
    return msgpack.packb(data)


DELETE = object()


def test_round_trip() -> None:
    hb = heartbeat("ams-1", "ams", seq=7, egress=123, failed_disks=1, generation=9, full=False,
                   added=["t/x.mp4"], removed=["t/y.mp4"], base=8)
    assert decode_heartbeat(encode_heartbeat(hb)) == hb
    assert decode_heartbeat(encode_heartbeat(with_bgp(hb))) == with_bgp(hb)
    full = RoutesUpdate(generation=9, full=True, announced=ROUTES.announced)
    assert decode_heartbeat(encode_heartbeat(with_bgp(hb, full))).routes == full


def test_an_appliance_without_bgp_reports_no_routes_and_an_older_one_decodes() -> None:
    hb = decode_heartbeat(wire(routes=None, bgp=[]))
    assert hb.routes is None and hb.health.bgp == ()
    older = decode_heartbeat(wire(routes=DELETE, bgp=DELETE))  # a reporter from before BGP
    assert older.routes is None and older.health.bgp == ()


def test_the_wire_map_is_flat_and_versioned() -> None:
    data = msgpack.unpackb(encode_heartbeat(heartbeat("ams-1", "ams", added=["t/a.mp4"])))
    assert data["v"] == 1
    assert set(data) == {"v", "appliance_id", "site", "boot", "seq", "sent_at", "accepting", "draining",
                         "drain_reason", "load",
                         "egress_bps", "capacity_bps", "disks", "popularity", "degraded", "pull_through", "inventory",
                         "bgp", "routes"}
    assert data["routes"] is None and data["bgp"] == []  # no BGP on this appliance
    bgp = msgpack.unpackb(encode_heartbeat(with_bgp(heartbeat("ams-1", "ams"))))
    assert bgp["routes"] == {"generation": 5, "full": False, "base": 4, "withdrawn": ["198.51.100.0/24"],
                             "announced": [["192.0.2.0/24", [64500, 64510], 50, 100, ["64500:42", "64500:1:2"]],
                                           ["2001:db8:a::/48", [], None, None, []]]}
    assert bgp["bgp"][1] == {"peer": "2001:db8::1", "peer_as": 64500, "state": "down", "since": 1767225100.0,
                             "prefixes": 0, "refused": 0, "last_update_at": None}
    assert data["inventory"] == {"generation": 1, "full": True, "base": None, "added": ["t/a.mp4"], "removed": []}
    assert data["disks"][0] == {"path": "/d0", "tier": "hdd", "state": "ok", "total_bytes": 10**12,
                                "free_bytes": 10**11, "files": 3}


@pytest.mark.parametrize("raw, field", [
    (b"\xc1", "msgpack"),
    (msgpack.packb([1, 2]), "(top level)"),
    (wire(v=2), "v:"),
    (wire(v=DELETE), "v:"),
    (wire(appliance_id=DELETE), "appliance_id: required"),
    (wire(appliance_id="../etc"), "appliance_id:"),
    (wire(seq=-1), "seq:"),
    (wire(seq=True), "seq:"),
    (wire(sent_at="now"), "sent_at:"),
    (wire(accepting="yes"), "accepting:"),
    (wire(load__loadavg=float("nan")), "load.loadavg:"),
    (wire(egress_bps=1.5), "egress_bps:"),
    (wire(disks="none"), "disks:"),
    (wire(disks__0__state="broken"), "disks[0].state:"),
    (wire(disks__0__free_bytes=-5), "disks[0].free_bytes:"),
    (wire(popularity={"../x": [1, 2]}), "popularity["),
    (wire(popularity={"t/a.mp4": [1]}), "popularity["),
    (wire(inventory="all"), "inventory:"),
    (wire(inventory__added=["ok/key", "bad//key"]), "inventory.added[1]"),
    (wire(inventory__added=[7]), "inventory.added[0]"),
    (wire(inventory__full=False), "inventory.base: required"),
    (wire(inventory__full=False, inventory__base=5), "inventory.base: must not be above"),
    (wire(inventory__removed=["t/a.mp4"]), "inventory.removed"),
    (wire(pull_through="yes"), "pull_through:"),
    (wire(routes="all"), "routes:"),
    (wire(routes__base=DELETE), "routes.base: required"),
    (wire(routes__base=6), "routes.base: must not be above"),
    (wire(routes__full=True, routes__base=None), "routes.withdrawn: must be empty"),
    (wire(routes__announced="x"), "routes.announced:"),
    (wire(routes__announced__0="192.0.2.0/24"), "routes.announced[0]: must be"),
    (wire(routes__announced__0__0="192.0.2.1/24"), "routes.announced[0][0]: not a canonical"),
    (wire(routes__announced__0__0="2001:DB8::/32"), "routes.announced[0][0]: not a canonical"),
    (wire(routes__announced__0__0="10.0.0.0/33"), "routes.announced[0][0]: not a canonical"),
    (wire(routes__announced__0__0=7), "routes.announced[0][0]: not a canonical"),
    (wire(routes__announced__0__1=[1, -2]), "routes.announced[0][1]: the AS path"),
    (wire(routes__announced__0__1=list(range(300))), "routes.announced[0][1]: the AS path"),
    (wire(routes__announced__0__1=[1 << 32]), "routes.announced[0][1]: the AS path"),
    (wire(routes__announced__0__2=-1), "routes.announced[0][2]:"),
    (wire(routes__announced__0__3="high"), "routes.announced[0][3]:"),
    (wire(routes__announced__0__4=["no-export!"]), "routes.announced[0][4]: communities"),
    (wire(routes__announced__0__4=["1:2"] * 65), "routes.announced[0][4]: communities"),
    (wire(routes__withdrawn=["nope"]), "routes.withdrawn[0]: not a canonical"),
    (wire(bgp="up"), "bgp: must be an array"),
    (wire(bgp=[{}] * 17), "bgp: must have at most 16 items"),
    (wire(bgp__0__state="established"), "bgp[0].state: must be one of"),
    (wire(bgp__0__peer_as=1 << 32), "bgp[0].peer_as:"),
    (wire(bgp__0__prefixes=-1), "bgp[0].prefixes:"),
    (wire(bgp__0__peer=DELETE), "bgp[0].peer: required"),
], ids=["not-msgpack", "not-a-map", "version-2", "no-version", "no-appliance", "bad-appliance-id",
        "negative-seq", "bool-seq", "string-time", "string-bool", "nan-load", "float-bps", "disks-not-list",
        "disk-state", "negative-free", "bad-popularity-key", "short-popularity", "inventory-not-map",
        "bad-inventory-key", "int-inventory-key", "delta-without-base", "base-above-generation",
        "removed-in-full", "string-pull-through", "routes-not-map", "routes-delta-without-base",
        "routes-base-above-generation", "withdrawn-in-full-table", "announced-not-list", "route-not-array",
        "route-host-bits", "route-not-canonical-v6", "route-too-long", "route-prefix-int", "as-path-negative",
        "as-path-too-long", "as-above-32-bits", "med-negative", "local-pref-string", "community-garbage",
        "too-many-communities", "withdrawn-garbage", "bgp-not-list", "too-many-sessions", "session-state",
        "session-as-above-32-bits", "session-negative-prefixes", "session-without-peer"])
def test_malformed_reports_name_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(HeartbeatError) as err:
        decode_heartbeat(raw)
    assert field in str(err.value)
    assert err.value.status_hint == 400


REFUSALS = [
    ("seq-negative", wire(seq=-1), MalformedHeartbeat, "seq: must be at least 0"),
    ("seq-bool", wire(seq=True), MalformedHeartbeat, "seq: must be an integer"),
    ("version-bool", wire(v=True), UnsupportedVersion, "v: schema version True not supported (want 1)"),
    ("no-site", wire(site=DELETE), MalformedHeartbeat, "site: required"),
    ("site-spaces", wire(site="a b"), MalformedHeartbeat, "site: must be 1-64 of [A-Za-z0-9_.-]"),
    ("boot-upper", wire(boot="00C0FFEE"), MalformedHeartbeat, "boot: must be 8-64 hex digits"),
    ("boot-newline", wire(boot="00c0ffee\n"), MalformedHeartbeat, "boot: must be 8-64 hex digits"),
    ("time-string", wire(sent_at="now"), MalformedHeartbeat, "sent_at: must be a number"),
    ("time-infinite", wire(sent_at=float("inf")), MalformedHeartbeat, "sent_at: must be finite"),
    ("load-not-map", wire(load=[1, 2]), MalformedHeartbeat, "load: must be a map"),
    ("load-field-missing", wire(load__open_connections=DELETE), MalformedHeartbeat, "load.open_connections: required"),
    ("bps-float", wire(egress_bps=1.5), MalformedHeartbeat, "egress_bps: must be an integer"),
    ("disks-not-list", wire(disks="none"), MalformedHeartbeat, "disks: must be an array of maps"),
    ("disk-state", wire(disks__0__state="broken"), MalformedHeartbeat, "disks[0].state: must be one of ok, failed"),
    ("popularity-nan", wire(popularity={"t/a.mp4": [float("nan"), 1]}), MalformedHeartbeat,
     "popularity['t/a.mp4']: must be [requests, bytes], two non-negative numbers"),
    ("popularity-key", wire(popularity={"t/a.mp4": [1, 2], "a//b": [1, 2]}), MalformedHeartbeat,
     "popularity['a//b']: not a valid file key"),
    ("degraded-too-many", wire(degraded=["t"] * 65), MalformedHeartbeat, "degraded: must have at most 64 items"),
    ("degraded-long-name", wire(degraded=["x" * 65]), MalformedHeartbeat, "degraded[0]: must be at most 64 characters"),
    ("inventory-key-int", wire(inventory__added=[7]), MalformedHeartbeat, "inventory.added[0]: must be a string"),
    ("inventory-key", wire(inventory__full=False, inventory__base=1, inventory__removed=["a/../b"]), MalformedHeartbeat,
     "inventory.removed[0]: not a valid file key: 'a/../b'"),
    ("inventory-added-missing", wire(inventory__added=DELETE), MalformedHeartbeat, "inventory.added: required"),
    ("routes-not-map", wire(routes="all"), MalformedHeartbeat, "routes: must be a map or nil"),
    ("announced-not-list", wire(routes__announced="x"), MalformedHeartbeat,
     "routes.announced: must be an array of routes, each [prefix, as_path, med, local_pref, communities]"),
    ("route-six-elements", wire(routes__announced__0=["192.0.2.0/24", [], None, None, [], 1]), MalformedHeartbeat,
     "routes.announced[0]: must be [prefix, as_path, med, local_pref, communities]"),
    ("route-as-path", wire(routes__announced__0__1=[1, -2]), MalformedHeartbeat,
     "routes.announced[0][1]: the AS path must be at most 255 AS numbers below 2^32"),
    ("route-med", wire(routes__announced__0__2=1.5), MalformedHeartbeat,
     "routes.announced[0][2]: must be nil or an integer below 2^32"),
    ("bgp-not-list", wire(bgp="up"), MalformedHeartbeat, "bgp: must be an array of maps"),
    ("bgp-too-many", wire(bgp=[{}] * 17), MalformedHeartbeat, "bgp: must have at most 16 items"),
    ("session-state", wire(bgp__0__state="established"), MalformedHeartbeat,
     "bgp[0].state: must be one of idle, connect, up, down"),
    ("session-as", wire(bgp__0__peer_as=1 << 32), MalformedHeartbeat, "bgp[0].peer_as: must be below 2^32"),
    ("session-peer-long", wire(bgp__0__peer="p" * 65), MalformedHeartbeat, "bgp[0].peer: must be at most 64 characters"),
    ("session-no-peer", wire(bgp__0__peer=DELETE), MalformedHeartbeat, "bgp[0].peer: required"),
    ("session-update-negative", wire(bgp__0__last_update_at=-1), MalformedHeartbeat,
     "bgp[0].last_update_at: must be at least 0"),
]


@pytest.mark.parametrize("raw, kind, message", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refusals_say_what_is_wrong(raw: bytes, kind: type, message: str) -> None:
    with pytest.raises(kind) as err:
        decode_heartbeat(raw)
    assert str(err.value) == message


# Encoded by the hand-written encoder that preceded the msgspec Structs: v1 bytes stay v1 bytes.
GOLDEN = bytes.fromhex(
    "de0013a17601ac6170706c69616e63655f6964a5616d732d31a473697465a3616d73a4626f6f74b0303063306666656530306330"
    "66666565a37365712aa773656e745f6174cb41da556e40200000a9616363657074696e67c3a8647261696e696e67c3ac64726169"
    "6e5f726561736f6ea96469736b2073776170a46c6f616482a76c6f6164617667cb3fe6666666666666b06f70656e5f636f6e6e65"
    "6374696f6e73cd04b0aa6567726573735f627073cebebc2000ac63617061636974795f627073cf00000002540be400a56469736b"
    "739186a470617468a92f7372762f73736430a474696572a3737364a57374617465a26f6bab746f74616c5f6279746573cf000003"
    "a352944000aa667265655f6279746573cf000000e8d4a51000a566696c6573cd0708aa706f70756c617269747981a7742f612e6d"
    "703492cb4008000000000000cb40a7700000000000a8646567726164656491a47363616eac70756c6c5f7468726f756768c3a969"
    "6e76656e746f727985aa67656e65726174696f6e07a466756c6cc2a46261736506a5616464656491a7742f622e6d7034a772656d"
    "6f76656491a7742f632e6d7034a36267709187a470656572a93139322e302e322e31a7706565725f6173cdfbf4a57374617465a2"
    "7570a573696e6365cb41da556daa000000a8707265666978657378a77265667573656402ae6c6173745f7570646174655f6174cb"
    "41da556e3d800000a6726f7574657385aa67656e65726174696f6e03a466756c6cc2a46261736502a9616e6e6f756e6365649195"
    "ac3139322e302e322e302f323492cdfbf4cdfbfe32c091a836343530303a3432a977697468647261776e91af3139382e35312e31"
    "30302e302f3234")


def golden() -> Heartbeat:
    health = HealthSnapshot(
        accepting=True, draining=True, drain_reason="disk swap", load=Load(0.7, 1200), egress_bps=3_200_000_000,
        capacity_bps=10**10, disks=(DiskReport("/srv/ssd0", "ssd", DiskState.OK, 4 * 10**12, 10**12, 1800),),
        popularity={"t/a.mp4": (3.0, 3000.0)}, degraded=("scan",), pull_through=True,
        bgp=(BgpSession("192.0.2.1", 64500, "up", 1767225000.0, 120, 2, 1767225590.0),))
    return Heartbeat(
        "ams-1", "ams", 42, 1767225600.5, health,
        InventoryUpdate(generation=7, full=False, added=("t/b.mp4",), removed=("t/c.mp4",), base=6),
        boot="00c0ffee00c0ffee",
        routes=RoutesUpdate(3, False, (Route("192.0.2.0/24", (64500, 64510), 50, None, ("64500:42",)),),
                            ("198.51.100.0/24",), base=2))


def test_v1_bytes_are_what_older_appliances_and_replicas_send_and_read() -> None:
    assert encode_heartbeat(golden()) == GOLDEN
    assert decode_heartbeat(GOLDEN) == golden()
    ack = HeartbeatAck(7, False, "up", "", 3, False)
    assert encode_ack(ack) == bytes.fromhex(
        "87a17601ae67656e65726174696f6e5f61636b07a96e6565645f66756c6cc2a6737461747573a27570a6726561736f6ea0aa72"
        "6f757465735f61636b03b0726f757465735f6e6565645f66756c6cc2")
    assert list(ack_to_dict(ack)) == ["v", "generation_ack", "need_full", "status", "reason", "routes_ack",
                                      "routes_need_full"]


ACK_REFUSALS = [
    ("no-need-full", msgpack.packb({"v": 1, "generation_ack": 1}), "application/msgpack", MalformedHeartbeat,
     "ack.need_full: required"),
    ("need-full-string", msgpack.packb({"v": 1, "generation_ack": 1, "need_full": "x"}), "application/msgpack",
     MalformedHeartbeat, "ack.need_full: must be true or false"),
    ("generation-negative", b'{"generation_ack": -1, "need_full": true}', "application/json", MalformedHeartbeat,
     "ack.generation_ack: must be at least 0"),
    ("version-2", msgpack.packb({"v": 2, "generation_ack": 1, "need_full": True}), "application/msgpack",
     UnsupportedVersion, "ack.v: schema version 2 not supported (want 1)"),
    ("not-a-map", b"[]", "application/json", MalformedHeartbeat, "ack: must be a map"),
    ("not-json", b"{", "application/json", MalformedHeartbeat, "ack: not valid application/json"),
]


@pytest.mark.parametrize("raw, content_type, kind, message", [r[1:] for r in ACK_REFUSALS],
                         ids=[r[0] for r in ACK_REFUSALS])
def test_ack_refusals_say_what_is_wrong(raw: bytes, content_type: str, kind: type, message: str) -> None:
    with pytest.raises(kind) as err:
        decode_ack(raw, content_type)
    assert str(err.value).startswith(message)


def test_pull_through_round_trips_and_an_older_reporter_means_off() -> None:
    assert decode_heartbeat(encode_heartbeat(heartbeat("ams-1", "ams", pull_through=True))).health.pull_through
    assert decode_heartbeat(wire(pull_through=DELETE)).health.pull_through is False


def test_version_errors_are_their_own_kind() -> None:
    with pytest.raises(UnsupportedVersion):
        decode_heartbeat(wire(v=2))
    with pytest.raises(MalformedHeartbeat):
        decode_heartbeat(wire(seq="x"))


@pytest.mark.parametrize("content_type", ["application/msgpack", "application/json"])
def test_ack_round_trip(content_type: str) -> None:
    ack = HeartbeatAck(generation_ack=41, need_full=True, status="down", reason="missed-reports", routes_ack=7,
                       routes_need_full=True)
    raw = encode_ack(ack) if "msgpack" in content_type else json.dumps(ack_to_dict(ack)).encode()
    assert decode_ack(raw, content_type) == ack
    assert decode_ack(encode_ack(HeartbeatAck(None, True))).generation_ack is None
    older = {k: v for k, v in ack_to_dict(ack).items() if not k.startswith("routes")}  # a replica before BGP
    assert decode_ack(msgpack.packb(older)) == msgspec.structs.replace(ack, routes_ack=None, routes_need_full=False)


segment = st.text(st.sampled_from("ab9_.-/%é"), min_size=0, max_size=12)


@settings(max_examples=300, deadline=None)
@given(segment)
def test_the_fast_key_check_agrees_with_the_contract(key: str) -> None:
    raw = wire(inventory__added=[key])
    try:
        decode_heartbeat(raw)
        accepted = True
    except MalformedHeartbeat:
        accepted = False
    assert accepted == is_valid_file_key(key)


@pytest.mark.parametrize("key", ["a" * 255, "a" * 256, "/".join(["a" * 200] * 2) + "/" + "b" * 110,
                                 "/".join(["a" * 200] * 2) + "/" + "b" * 111, ".hidden", "a/./b", "a/../b", "a/"],
                         ids=["segment-255", "segment-256", "key-512", "key-513", "leading-dot", "dot-segment",
                              "dotdot-segment", "trailing-slash"])
def test_the_fast_key_check_agrees_at_the_limits(key: str) -> None:
    test_the_fast_key_check_agrees_with_the_contract.hypothesis.inner_test(key)


OLD = Keyring({KeyId("k1"): b"1" * 32}, KeyId("k1"))
ROTATED = Keyring({KeyId("k1"): b"1" * 32, KeyId("k2"): b"2" * 32}, KeyId("k2"))


def test_signatures_follow_key_rotation() -> None:
    body = encode_heartbeat(heartbeat("ams-1", "ams"))
    rotated = lambda appliance: ROTATED  # noqa: E731 - steering's per-appliance lookup
    assert verify_body(body, sign_body(body, OLD, "ams-1"), rotated) == ("ams-1", "k1")  # not yet rotated
    assert verify_body(body, sign_body(body, ROTATED, "ams-1"), rotated) == ("ams-1", "k2")
    with pytest.raises(HeartbeatUnauthorized):
        verify_body(body, sign_body(body, ROTATED, "ams-1"), lambda a: OLD)  # steering must learn a key first


_SIG = "A" * 43


@pytest.mark.parametrize("header", [None, "", "k=k1", f"a=ams-1,s={_SIG}", "a=ams-1,k=k1,s=AAAA", "garbage",
                                    f"a=ams-1,k=k9,s={_SIG}", f"a=ams-1,k=k1,s={_SIG}", f"a=nobody,k=k1,s={_SIG}",
                                    f"a=ams 1,k=k1,s={_SIG}", f"a=ams-1,k=k1,s={'é' * 43}", "a=" + "x" * 300],
                         ids=["absent", "empty", "no-appliance", "no-key", "short-signature", "garbage",
                              "unknown-key", "wrong-signature", "unknown-appliance", "bad-appliance",
                              "non-ascii-signature", "too-long"])
def test_bad_signatures_are_401(header: str | None) -> None:
    with pytest.raises(HeartbeatUnauthorized) as err:
        verify_body(b"body", header, lambda a: OLD if a == "ams-1" else None)
    assert err.value.status_hint == 401


def test_a_tampered_body_fails() -> None:
    body = encode_heartbeat(heartbeat("ams-1", "ams"))
    with pytest.raises(HeartbeatUnauthorized):
        verify_body(body + b"x", sign_body(body, OLD, "ams-1"), lambda a: OLD)


def test_one_appliances_keys_cannot_sign_for_another() -> None:
    """Steering checks the signature with the keys derived for the appliance the header names; the
    service then checks the body names the same one (tests/steering/test_steer_http.py)."""
    master = ROTATED
    body = encode_heartbeat(heartbeat("ams-2", "ams"))
    forged = sign_body(body, derive_keyring(master, "ams-1"), "ams-2")  # ams-1's keys, claiming ams-2
    with pytest.raises(HeartbeatUnauthorized):
        verify_body(body, forged, lambda a: derive_keyring(master, a))


@pytest.mark.parametrize("reports, refused", [
    ([("b1", 1), ("b1", 2), ("b1", 3)], None),
    ([("b1", 1), ("b1", 1)], 1),  # the same report again
    ([("b1", 5), ("b1", 4)], 1),  # an older one
    ([("b1", 5), ("b2", 1), ("b2", 2)], None),  # a restart: a new boot starts anywhere
    ([("b1", 5), ("b2", 1), ("b1", 6)], 2),  # the old boot has ended: its reports are replays
], ids=["growing", "same-seq", "older-seq", "new-boot", "ended-boot"])
def test_report_sequence_refuses_replays(reports, refused) -> None:
    guard = ReportSequence()
    for i, (boot, seq) in enumerate(reports):
        if i == refused:
            with pytest.raises(ReplayedHeartbeat):
                guard.accept("ams-1", boot, seq)
        else:
            guard.accept("ams-1", boot, seq)
    guard.accept("ams-2", "b1", 1)  # per appliance


@pytest.mark.parametrize("age_s, ok", [(0, True), (299, True), (-299, True), (301, False), (-301, False)],
                         ids=["now", "old-but-fresh", "clock-ahead", "replayed", "far-future"])
def test_freshness(age_s: float, ok: bool) -> None:
    hb = heartbeat("ams-1", "ams")
    if ok:
        check_fresh(hb, hb.sent_at + age_s, 300)
    else:
        with pytest.raises(StaleHeartbeat):
            check_fresh(hb, hb.sent_at + age_s, 300)


DRAIN_REASONS = [
    ("ok", True, "disk swap at 14:00 (OPS-42)", None),
    ("unicode", True, "Wartung: Lüfter tauschen", None),
    ("none-given", True, "", None),
    ("longest", True, "x" * 200, None),
    ("too-long", True, "x" * 201, "drain_reason: at most 200"),
    ("newline", True, "a\nb", "drain_reason: at most 200 printable"),
    ("escape", True, "\x1b[31mred", "drain_reason"),
    ("line-separator", True, "a\u2028b", "drain_reason"),
    ("not-a-string", True, 42, "drain_reason"),
    ("without-draining", False, "why?", "drain_reason: must be empty unless draining"),
]


@pytest.mark.parametrize("draining,reason,error", [c[1:] for c in DRAIN_REASONS], ids=[c[0] for c in DRAIN_REASONS])
def test_drain_reason_travels_strictly_validated(draining, reason, error) -> None:
    raw = wire(draining=draining, drain_reason=reason)
    if error is None:
        hb = decode_heartbeat(raw)
        assert hb.health.draining is draining and hb.health.drain_reason == reason
        assert decode_heartbeat(encode_heartbeat(hb)) == hb
    else:
        with pytest.raises(MalformedHeartbeat, match=error):
            decode_heartbeat(raw)


def test_a_report_from_before_drain_reasons_decodes() -> None:
    assert decode_heartbeat(wire(drain_reason=DELETE)).health.drain_reason == ""

