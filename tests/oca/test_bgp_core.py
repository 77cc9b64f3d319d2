"""The appliance's BGP core without a router: the policy's refusals, ExaBGP's JSON read into events,
the route table's hold timers, caps and best-route choice, the config's errors naming the key, and
the ExaBGP config it renders. (tests/oca/test_bgp_bird.py runs the real thing against BIRD.)"""
from __future__ import annotations

import json

import pytest

from contracts.structconf import ConfigError
from oca import config as oca_config
from oca.bgp import exaconf, show
from oca.bgp.messages import Attributes, BadMessage, EndOfRib, StateEvent, UpdateEvent, parse_message
from oca.bgp.policy import Policy, Refusal
from oca.bgp.table import Peer, RouteTable

POLICY = Policy(local_as=40027, max_prefixes=3, max_as_path_length=4)


@pytest.mark.parametrize("prefix, path, as_set, verdict", [
    ("192.0.2.0/24", (64500,), False, None),
    ("2001:db8:a::/48", (64500,), False, None),
    ("2001:DB8:A::/48", (64500,), False, None),  # another spelling: accepted, normalised
    ("10.0.0.0/8", (64500,), False, None),  # private space may be an ISP's clients
    ("0.0.0.0/0", (64500,), False, Refusal.DEFAULT_ROUTE),
    ("::/0", (64500,), False, Refusal.DEFAULT_ROUTE),
    ("64.0.0.0/2", (64500,), False, Refusal.TOO_SHORT),
    ("2000::/3", (64500,), False, Refusal.TOO_SHORT),
    ("127.0.0.0/8", (64500,), False, Refusal.MARTIAN),
    ("127.1.2.0/24", (64500,), False, Refusal.MARTIAN),
    ("169.254.0.0/16", (64500,), False, Refusal.MARTIAN),
    ("224.1.0.0/16", (64500,), False, Refusal.MARTIAN),
    ("240.0.0.0/8", (64500,), False, Refusal.MARTIAN),
    ("fe80::/64", (64500,), False, Refusal.MARTIAN),
    ("ff02::/16", (64500,), False, Refusal.MARTIAN),
    ("::ffff:192.0.2.0/120", (64500,), False, Refusal.MARTIAN),
    ("192.0.2.1/24", (64500,), False, Refusal.MALFORMED),
    ("nonsense", (64500,), False, Refusal.MALFORMED),
    ("192.0.2.0/24", (64500, 40027), False, Refusal.AS_LOOP),
    ("192.0.2.0/24", (1, 2, 3, 4, 5), False, Refusal.AS_PATH_TOO_LONG),
    ("192.0.2.0/24", (64500,), True, Refusal.AS_SET),
], ids=["v4", "v6", "v6-uppercase", "private", "default-v4", "default-v6", "short-v4", "short-v6", "loopback",
        "inside-loopback", "link-local", "multicast", "reserved", "link-local-v6", "multicast-v6", "v4-mapped",
        "host-bits", "garbage", "own-as-loop", "long-path", "as-set"])
def test_policy(prefix, path, as_set, verdict) -> None:
    assert POLICY.judge(prefix, path, as_set)[1] is verdict


def test_policy_refuses_configured_networks_and_what_overlaps_them() -> None:
    policy = oca_config.parse(_config('refuse = ["100.64.0.0/10"]')).bgp
    from oca.bgp.speaker import policy_of
    p = policy_of(policy)
    assert p.judge("100.64.1.0/24", (1,))[1] is Refusal.MARTIAN
    assert p.judge("100.0.0.0/8", (1,))[1] is Refusal.MARTIAN  # holds the refused network
    assert p.judge("100.128.0.0/10", (1,))[1] is None


def _line(kind: str, neighbor: dict, peer: str = "127.0.0.1") -> str:
    return json.dumps({"exabgp": "4.0.1", "type": kind, "neighbor": {
        "address": {"local": "127.0.0.2", "peer": peer}, "asn": {"local": 40027, "peer": 64500}, **neighbor}})


UPDATE = {"direction": "receive", "message": {"update": {
    "attribute": {"origin": "igp", "as-path": [64500, 64510], "med": 50, "local-preference": 120,
                  "community": [[64500, 42]], "large-community": [[64500, 1, 2]],
                  "extended-community": [{"value": 1, "string": "target:64500:7"}]},
    "announce": {"ipv4 unicast": {"192.0.2.254": [{"nlri": "192.0.2.0/24"}, {"nlri": "198.51.100.0/24"}]},
                 "flow": {"x": [{"nlri": "ignored"}]}},
    "withdraw": {"ipv4 unicast": [{"nlri": "203.0.113.0/24"}]}}}}


@pytest.mark.parametrize("line, event", [
    (_line("state", {"state": "up"}), StateEvent("127.0.0.1", "up")),
    (_line("state", {"state": "down", "reason": "peer reset"}), StateEvent("127.0.0.1", "down", "peer reset")),
    (_line("update", UPDATE), UpdateEvent("127.0.0.1", Attributes(
        (64500, 64510), False, 50, 120, ("64500:42", "64500:1:2", "target:64500:7")),
        ("192.0.2.0/24", "198.51.100.0/24"), ("203.0.113.0/24",))),
    (_line("update", {"direction": "receive", "message": {"eor": {"afi": "ipv6", "safi": "unicast"}}}),
     EndOfRib("127.0.0.1", "ipv6 unicast")),
    (_line("update", {**UPDATE, "direction": "send"}), None),
    (json.dumps({"type": "notification", "notification": "shutdown"}), None),
    (json.dumps({"type": "signal", "neighbor": {}}), None),
], ids=["up", "down", "update", "end-of-rib", "sent", "exabgp-shutdown", "other-type"])
def test_messages(line, event) -> None:
    assert parse_message(line) == event


@pytest.mark.parametrize("line", [
    "not json", "[1, 2]", _line("state", {"state": 5}),
    json.dumps({"type": "update", "neighbor": {"address": {}}}),
    _line("update", {"direction": "receive", "message": {"update": {"attribute": {"as-path": ["x"]}}}}),
    _line("update", {"direction": "receive", "message": {"update": {"attribute": {"med": -1}}}}),
    _line("update", {"direction": "receive", "message": {"update": {"announce": {"ipv4 unicast": {"n": [{}]}}}}}),
    _line("update", {"direction": "receive", "message": {"update": {"attribute": {"community": [[1]]}}}}),
], ids=["garbage", "array", "state-not-string", "no-peer", "as-path-strings", "negative-med", "no-nlri",
        "short-community"])
def test_bad_messages_are_refused_not_crashed_on(line) -> None:
    with pytest.raises(BadMessage):
        parse_message(line)


PEERS = [Peer("v4", "127.0.0.1", 64500), Peer("v4-2", "127.0.0.2", 64501)]


def table(hold: float = 10.0) -> RouteTable:
    t = RouteTable(PEERS, POLICY, hold, now=0.0)
    t.on_state("127.0.0.1", "up", 0.0)
    return t


def update(t: RouteTable, peer: str, *prefixes: str, path=(64500,), med=None, withdrawn=(), now=1.0):
    return t.on_update(peer, Attributes(tuple(path), False, med), prefixes, withdrawn, now)


def test_announce_withdraw_and_versions() -> None:
    t = table()
    v0 = t.version
    assert update(t, "127.0.0.1", "192.0.2.0/24", "198.51.100.0/24").accepted == 2
    assert set(t.best().routes) == {"192.0.2.0/24", "198.51.100.0/24"} and t.version > v0
    v1, snap = t.version, t.best()
    update(t, "127.0.0.1", "192.0.2.0/24")  # the same route again: nothing changed
    assert t.version == v1 and t.best() is snap and t.best().routes["192.0.2.0/24"] is snap.routes["192.0.2.0/24"]
    assert update(t, "127.0.0.1", withdrawn=("198.51.100.0/24",)).withdrawn == 1
    assert set(t.best().routes) == {"192.0.2.0/24"}


def test_the_cap_refuses_new_prefixes_and_keeps_the_held_ones() -> None:
    t = table()
    result = update(t, "127.0.0.1", *[f"10.{i}.0.0/16" for i in range(10)])
    assert result.accepted == 3 and len(result.refused[Refusal.OVER_LIMIT]) == 3  # a few examples kept
    s = t.sessions["127.0.0.1"]
    assert len(s.routes) == 3 and s.refused[Refusal.OVER_LIMIT] == 7
    assert update(t, "127.0.0.1", "10.0.0.0/16", med=5).accepted == 1  # a held prefix may change


def test_a_refused_announcement_of_a_held_prefix_withdraws_it() -> None:
    t = table()
    update(t, "127.0.0.1", "192.0.2.0/24")
    result = update(t, "127.0.0.1", "192.0.2.0/24", path=(64500, 40027))  # now with our AS: a loop
    assert result.withdrawn == 1 and not t.best().routes


def test_best_route_over_sessions() -> None:
    t = table()
    t.on_state("127.0.0.2", "up", 0.0)
    update(t, "127.0.0.1", "192.0.2.0/24", path=(64500, 64510))
    update(t, "127.0.0.2", "192.0.2.0/24", path=(64501,), med=100)
    assert t.best().routes["192.0.2.0/24"].as_path == (64501,)  # shorter path, whatever the MED
    update(t, "127.0.0.1", "192.0.2.0/24", path=(64500,), med=10)
    assert t.best().routes["192.0.2.0/24"].med == 10  # equal paths: the lower MED
    update(t, "127.0.0.1", withdrawn=("192.0.2.0/24",))
    assert t.best().routes["192.0.2.0/24"].med == 100  # the other session's route again


def test_a_session_down_keeps_its_routes_for_the_hold_time() -> None:
    t = table(hold=10)
    update(t, "127.0.0.1", "192.0.2.0/24")
    t.on_state("127.0.0.1", "down", 5.0, "peer reset")
    assert t.expire(14.9) == [] and t.best().routes
    assert t.expire(15.0) == [("v4", 1)] and not t.best().routes


def test_a_session_back_up_replaces_what_it_held_at_end_of_rib() -> None:
    t = table(hold=10)
    update(t, "127.0.0.1", "192.0.2.0/24", "198.51.100.0/24")
    t.on_state("127.0.0.1", "down", 5.0)
    t.on_state("127.0.0.1", "up", 6.0)
    assert t.sessions["127.0.0.1"].stale == {"192.0.2.0/24", "198.51.100.0/24"}
    update(t, "127.0.0.1", "192.0.2.0/24", now=6.5)  # announced again; the other is not
    assert set(t.best().routes) == {"192.0.2.0/24", "198.51.100.0/24"}  # stale still serves...
    assert t.on_end_of_rib("127.0.0.1") == 1  # ...until End-of-RIB
    assert set(t.best().routes) == {"192.0.2.0/24"}


def test_without_end_of_rib_stale_routes_go_at_the_hold_time() -> None:
    t = table(hold=10)
    update(t, "127.0.0.1", "192.0.2.0/24")
    t.on_state("127.0.0.1", "down", 5.0)
    t.on_state("127.0.0.1", "up", 6.0)
    assert t.expire(15.9) == [] and t.expire(16.0) == [("v4", 1)]


def test_the_speaker_gone_is_every_session_down_and_a_reconnect_attempt_changes_nothing() -> None:
    t = table(hold=10)
    update(t, "127.0.0.1", "192.0.2.0/24")
    t.all_down(3.0, "speaker stopped")
    assert t.on_state("127.0.0.1", "connected", 4.0) is None  # still down: the timer runs on
    assert t.expire(13.0) == [("v4", 1)]


def test_reconfigure_drops_removed_peers_and_what_the_new_policy_refuses() -> None:
    t = table()
    update(t, "127.0.0.1", "192.0.2.0/24", "10.0.0.0/8")
    t.reconfigure([PEERS[0]], Policy(40027, min_length_v4=16), 10, 2.0)
    assert set(t.best().routes) == {"192.0.2.0/24"}
    t.reconfigure([], POLICY, 10, 3.0)
    assert not t.best().routes and not t.sessions


def _config(extra: str = "", peers: str | None = None, head: str = "local_as = 40027") -> dict:
    import tomllib
    peers = peers if peers is not None else (
        '[[bgp.peers]]\naddress = "192.0.2.1"\nlocal_address = "192.0.2.10"\n'
        '[[bgp.peers]]\naddress = "2001:db8::1"\nlocal_address = "2001:db8::10"\npassive = true\n'
        'listen_port = 1790\npassword = "s3cret"\n')
    return tomllib.loads(f"""
[appliance]
id = "a"
[tokens]
key_file = "/k.toml"
[store]
index = "/i.db"
[[tiers.ssd]]
path = "/ssd"
[bgp]
{head}
peer_as = 64500
{extra}
{peers}""")


def test_config_defaults_and_names() -> None:
    bgp = oca_config.parse(_config()).bgp
    assert bgp.router_id == "192.0.2.10" and bgp.hold_time_s == 90 and bgp.max_prefixes == 100_000
    assert [(p.name, p.peer_as, p.passive, p.listen_port) for p in bgp.peers] == [
        ("v4", 64500, False, 179), ("v6", 64500, True, 1790)]
    assert oca_config.parse({k: v for k, v in _config().items() if k != "bgp"}).bgp is None


@pytest.mark.parametrize("extra, peers, key", [
    ("local_as = 0", None, "bgp.local_as"),  # (the default head is dropped for this one)
    ("hold_time_s = 1", None, "bgp.hold_time_s"),
    ("max_prefixes = 0", None, "bgp.max_prefixes"),
    ('refuse = ["10.0.0.1/8"]', None, "bgp.refuse[0]"),
    ('router_id = "2001:db8::1"', None, "bgp.router_id"),
    ("colour = 1", None, "bgp.colour"),
    ("", "", "bgp.peers"),
    ("", '[[bgp.peers]]\naddress = "x"\nlocal_address = "192.0.2.10"\n', "bgp.peers[0].address"),
    ("", '[[bgp.peers]]\naddress = "192.0.2.1"\nlocal_address = "::1"\n', "bgp.peers[0].local_address"),
    ("", '[[bgp.peers]]\naddress = "192.0.2.1"\nlocal_address = "192.0.2.2"\npassword = "a b"\n',
     "bgp.peers[0].password"),
    ("", '[[bgp.peers]]\naddress = "192.0.2.1"\nlocal_address = "192.0.2.2"\nport = 0\n', "bgp.peers[0].port"),
    ("", '[[bgp.peers]]\naddress = "192.0.2.1"\nlocal_address = "192.0.2.2"\nname = "a b"\n',
     "bgp.peers[0].name"),
    ("", '[[bgp.peers]]\naddress = "192.0.2.1"\nlocal_address = "192.0.2.2"\nname = "x"\n'
         '[[bgp.peers]]\naddress = "192.0.2.3"\nlocal_address = "192.0.2.2"\nname = "x"\n', "bgp.peers[1].name"),
], ids=["asn-zero", "hold-too-short", "no-prefixes", "refuse-host-bits", "router-id-v6", "unknown-key",
        "no-peers", "bad-address", "mixed-versions", "password-space", "port-zero", "bad-name", "name-twice"])
def test_config_errors_name_the_key(extra, peers, key) -> None:
    with pytest.raises(ConfigError) as err:
        oca_config.parse(_config(extra, peers, head="" if extra.startswith("local_as") else "local_as = 40027"))
    assert str(err.value).startswith(key), err.value


def test_exabgp_config_is_receive_only() -> None:
    from pathlib import Path
    text = exaconf.render(oca_config.parse(_config()).bgp, Path("/run/oca/bgp/feed"), python="/usr/bin/python3")
    assert "run /usr/bin/python3 -I -S " in text and "relay.py /run/oca/bgp/feed;" in text
    assert "neighbor 192.0.2.1 {" in text and "passive false;" in text and "connect 179;" in text
    assert "passive true;" in text and "listen 1790;" in text and 'md5-password "s3cret";' in text
    assert "family { ipv6 unicast; }" in text and "router-id 192.0.2.10;" in text
    assert "announce" not in text and "route " not in text and "static" not in text  # nothing to send
    with pytest.raises(ValueError):
        exaconf.render(oca_config.parse(_config()).bgp, Path("/a dir/feed"))


def test_show_reads_like_birdc() -> None:
    health = {"local_as": 40027, "router_id": "192.0.2.10", "hold_time_s": 90, "prefixes": 2,
              "speaker": {"pid": 42}, "sessions": [
                  {"name": "v4", "peer": "192.0.2.1", "peer_as": 64500, "state": "up", "since": 1.0e9,
                   "prefixes": 2, "stale": 0, "refused": {"martian": 1}, "withdraw_in_s": None, "last_error": ""},
                  {"name": "v6", "peer": "2001:db8::1", "peer_as": 64500, "state": "down", "since": 1.0e9,
                   "prefixes": 1, "stale": 0, "refused": {}, "withdraw_in_s": 12.5, "last_error": "Cease"}],
              "routes": [{"prefix": "192.0.2.0/24", "from": "v4", "as_path": [64500], "med": None,
                          "local_pref": None, "communities": ["64500:1"]}]}
    text = show.protocols(health)
    assert "ExaBGP pid 42" in text
    lines = text.splitlines()
    assert lines[1].split()[:4] == ["Name", "Peer", "Peer", "AS"]
    assert lines[2].split()[:4] == ["v4", "192.0.2.1", "64500", "Established"] and "martian 1" in lines[2]
    assert "Down" in lines[3] and "routes withdrawn in 12.5 s" in lines[3] and "Cease" in lines[3]
    assert show.routes(health).splitlines()[1].split() == ["192.0.2.0/24", "v4", "64500", "-", "-", "64500:1"]
