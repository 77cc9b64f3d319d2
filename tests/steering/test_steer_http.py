"""The HTTP API against a real server on 127.0.0.1: steer (GET and POST), heartbeats, fleet, health,
metrics, URL tokens, reloads of fleet and keys without dropping requests, and GeoIP with a MaxMind
database the test builds."""
from __future__ import annotations

import base64
import dataclasses
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import msgpack
import pytest
import requests
from mmdb_writer import MMDBWriter, MmdbU16
from netaddr import IPSet

from contracts.callers import appliance_authorization, new_token
from contracts.heartbeat import CONTENT_TYPE, SIGNATURE_HEADER, decode_ack, encode_heartbeat, sign_body
from contracts.ids import KeyId
from contracts.keys import derive_keyring, load_keyring, new_secret
from contracts.token import BadSignature, Keyring, WrongClient, parse_query, verify
from steer_helpers import AUTH, SITES, ServerThread, fleet_toml, heartbeat, post_heartbeat, wait_until, write_setup
from tests.support.prom import samples, total, types, value

APPLIANCES = [(f"{s}-{i}", s) for s in SITES for i in (1, 2, 3)]


def report_all(srv: ServerThread, holdings: dict[str, list[str]] | None = None, **kw) -> None:
    for appliance, site in APPLIANCES:
        keys = (holdings or {}).get(appliance, [])
        assert srv.post_heartbeat(heartbeat(appliance, site, added=keys, **kw)).status_code == 200


@pytest.fixture()
def server(tmp_path: Path):
    config = write_setup(tmp_path, health={"missed_reports": 100})  # no timing in these tests
    with ServerThread(config) as srv:
        report_all(srv, {"fra-2": ["t/only-fra2.mp4"], "ams-1": ["t/common.mp4"], "ams-2": ["t/common.mp4"]})
        yield srv


def steer(srv: ServerThread, **params) -> requests.Response:
    return requests.get(srv.url + "/v1/steer", params=params, headers=AUTH, timeout=5)


def test_get_steer_returns_signed_urls_spanning_two_sites(server: ServerThread) -> None:
    r = steer(server, file="t/common.mp4", client="192.0.2.55", explain=1)
    assert r.status_code == 200
    body = r.json()
    urls = body["locations"]
    assert len(urls) == 3
    assert [urlsplit(u).hostname.split(".")[0] for u in urls][:2] in (["ams-1", "ams-2"], ["ams-2", "ams-1"])
    assert len({c["site"] for c in body["decision"]["candidates"]}) == 2
    assert body["decision"] | {"candidates": None} == {"method": "prefix", "outcome": "hit", "site": "ams",
                                                       "candidates": None, "route": {
                                                           "source": "static", "prefix": "192.0.2.0/24",
                                                           "sites": ["ams"]}}
    master = load_keyring(server.config_path.parent / "keys.toml")
    for url in urls:
        parts = urlsplit(url)
        assert parts.path == "/t/common.mp4"
        params = parse_query(parts.query)
        assert params["c"] == "192.0.2.0/24" and int(params["e"]) == body["expires_at"]
        appliance = parts.hostname.split(".")[0]
        keys = derive_keyring(master, appliance)  # what that appliance holds, and nothing else does
        verify(parts.path, params, keys, now=time.time(), client_address="192.0.2.200")
        for other in {"ams-1", "ams-2", "lon-1"} - {appliance}:  # another appliance's copy: refused
            with pytest.raises(BadSignature):
                verify(parts.path, params, derive_keyring(master, other), now=time.time(), client_address="192.0.2.200")
        with pytest.raises(BadSignature):  # nor do the master keys themselves verify it
            verify(parts.path, params, master, now=time.time(), client_address="192.0.2.200")
        with pytest.raises(WrongClient):
            verify(parts.path, params, keys, now=time.time(), client_address="192.0.3.1")
        with pytest.raises(BadSignature):
            verify("/t/other.mp4", params, keys, now=time.time(), client_address="192.0.2.200")


def test_a_file_held_by_one_appliance_goes_there_first(server: ServerThread) -> None:
    body = steer(server, file="t/only-fra2.mp4", client="192.0.2.55", explain=1).json()
    assert urlsplit(body["locations"][0]).hostname.startswith("fra-2.")
    assert body["decision"]["outcome"] == "content-miss"


def test_post_steer_answers_a_whole_title(server: ServerThread) -> None:
    files = ["t/common.mp4", "t/only-fra2.mp4", "t/unknown.mp4"]
    before = time.time()
    r = requests.post(server.url + "/v1/steer", json={"client": "2001:db8:f::9", "files": files, "ttl_s": 90000},
                      headers=AUTH, timeout=5)
    assert r.status_code == 200
    body = r.json()
    assert set(body["files"]) == set(files)
    assert before + 90000 - 2 <= body["expires_at"] <= time.time() + 90000
    for key, answer in body["files"].items():
        assert len(answer["locations"]) == 3
        assert all(f"/{key}?" in u and "c=2001:db8:f::/48" in u for u in answer["locations"])
    assert urlsplit(body["files"]["t/only-fra2.mp4"]["locations"][0]).hostname.startswith("fra-2.")


@pytest.mark.parametrize("params, status, reason", [
    ({"client": "192.0.2.1"}, 400, "bad-request"),
    ({"file": "../etc/passwd", "client": "192.0.2.1"}, 400, "bad-request"),
    ({"file": "t/a.mp4", "client": "not-an-ip"}, 400, "bad-client"),
    ({"file": "t/a.mp4", "client": "192.0.2.1", "ttl_s": "soon"}, 400, "bad-request"),
    ({"file": "t/a.mp4", "client": "192.0.2.1", "ttl_s": 10**9}, 400, "bad-request"),
], ids=["no-file", "bad-key", "bad-client", "ttl-not-int", "ttl-over-max"])
def test_get_steer_refusals(server: ServerThread, params: dict, status: int, reason: str) -> None:
    r = steer(server, **params)
    assert r.status_code == status and r.json()["error"] == reason


@pytest.mark.parametrize("body", [
    "not json", {"files": "t/a.mp4"}, {"files": []}, {"files": [1]}, {"files": ["t/a.mp4"], "client": 5},
    {"files": ["t/a.mp4"] * 1001}, '{"files": ["t/a.mp4"], "ttl_s": 1e999}',
], ids=["not-json", "files-not-list", "no-files", "file-not-string", "client-not-string", "too-many", "ttl-inf"])
def test_post_steer_refusals(server: ServerThread, body) -> None:
    kw = {"data": body} if isinstance(body, str) else {"json": body}
    r = requests.post(server.url + "/v1/steer", headers=AUTH, timeout=5, **kw)
    assert r.status_code == 400


def test_client_defaults_to_the_peer_and_unknown_clients_go_to_the_default_site(server: ServerThread) -> None:
    body = steer(server, file="t/x.mp4", explain=1).json()  # 127.0.0.1: no prefix, no geo db
    assert body["decision"]["method"] == "default" and body["decision"]["site"] == "ams"
    assert "c=127.0.0.0/24" in body["locations"][0]


def test_heartbeat_acks_in_msgpack_or_json_and_asks_for_full_after_a_gap(server: ServerThread) -> None:
    r = server.post_heartbeat(heartbeat("lon-1", "lon", generation=5, added=["t/a.mp4"]))
    assert r.headers["Content-Type"].startswith(CONTENT_TYPE)
    ack = decode_ack(r.content)
    assert (ack.generation_ack, ack.need_full, ack.status) == (5, False, "up")
    r = server.post_heartbeat(heartbeat("lon-1", "lon", generation=7, full=False, base=6, added=["t/b.mp4"]),
                accept="application/json")
    assert r.json() == {"v": 1, "generation_ack": 5, "need_full": True, "status": "up", "reason": "ok",
                        "routes_ack": None, "routes_need_full": False}  # no BGP on this appliance
    r = server.post_heartbeat(heartbeat("lon-1", "lon", generation=6, full=False, base=5, added=["t/b.mp4"]))
    assert decode_ack(r.content).generation_ack == 6
    fleet = requests.get(server.url + "/v1/fleet", headers=AUTH, timeout=5).json()
    lon1 = next(a for s in fleet["sites"] for a in s["appliances"] if a["id"] == "lon-1")
    assert lon1["inventory"] == {"generation": 6, "files": 2}


@pytest.mark.parametrize("raw, status, reason", [
    (b"\x00garbage", 400, "heartbeat-malformed"),
    (msgpack.packb({"v": 9}), 400, "heartbeat-version"),
    (encode_heartbeat(heartbeat("nyc-1", "nyc")), 401, "heartbeat-unauthorized"),  # no keys for a stranger
], ids=["garbage", "version", "unknown-appliance"])
def test_bad_heartbeats_are_refused(server: ServerThread, raw: bytes, status: int, reason: str) -> None:
    who = "nyc-1" if reason == "heartbeat-unauthorized" else "lon-1"
    headers = {"Content-Type": CONTENT_TYPE, SIGNATURE_HEADER: sign_body(raw, derive_keyring(server.keys, who), who)}
    r = requests.post(server.url + "/v1/heartbeat", data=raw, headers=headers, timeout=5)
    assert r.status_code == status and r.json()["error"] == reason


def test_heartbeats_must_be_signed_and_fresh(server: ServerThread) -> None:
    hb = heartbeat("lon-1", "lon", draining=True)
    unsigned = post_heartbeat(server.url, hb, None)
    assert unsigned.status_code == 401 and unsigned.json()["error"] == "heartbeat-unauthorized"
    stranger = Keyring({KeyId("k1"): b"x" * 32}, KeyId("k1"))
    assert post_heartbeat(server.url, hb, stranger).status_code == 401
    replayed = dataclasses.replace(hb, sent_at=time.time() - 3600)
    r = server.post_heartbeat(replayed)
    assert r.status_code == 400 and r.json()["error"] == "heartbeat-stale"
    assert requests.get(server.url + "/healthz", timeout=5).json()["up"] == 9  # none of them took lon-1 down


def test_a_replayed_or_cross_signed_heartbeat_is_refused(server: ServerThread) -> None:
    """One appliance's keys sign for no other, and a captured report does not count twice."""
    hb = heartbeat("lon-2", "lon", draining=True)
    body = encode_heartbeat(hb)
    lon1 = derive_keyring(server.keys, "lon-1")
    for header in (sign_body(body, lon1, "lon-2"),  # lon-1's keys claiming to be lon-2
                   sign_body(body, lon1, "lon-1")):  # lon-1 signing a report that names lon-2
        r = requests.post(server.url + "/v1/heartbeat", data=body, timeout=5,
                          headers={"Content-Type": CONTENT_TYPE, SIGNATURE_HEADER: header})
        assert r.status_code == 401 and r.json()["error"] == "heartbeat-unauthorized"
    fresh = heartbeat("lon-1", "lon")
    assert post_heartbeat(server.url, fresh, server.keys).status_code == 200
    again = post_heartbeat(server.url, fresh, server.keys)  # the same bytes, replayed at once
    assert again.status_code == 409 and again.json()["error"] == "heartbeat-replayed"
    older = post_heartbeat(server.url, dataclasses.replace(fresh, seq=fresh.seq - 1), server.keys)
    assert older.status_code == 409
    assert requests.get(server.url + "/healthz", timeout=5).json()["up"] == 9  # lon-2 was never marked draining


def test_heartbeat_auth_can_be_turned_off(tmp_path: Path) -> None:
    with ServerThread(write_setup(tmp_path, steering={"heartbeat_auth": "false"})) as srv:
        assert post_heartbeat(srv.url, heartbeat("lon-1", "lon"), None).status_code == 200


def test_draining_appliance_leaves_answers_and_metrics_explain(server: ServerThread) -> None:
    server.post_heartbeat(heartbeat("ams-1", "ams", draining=True, added=["t/common.mp4"]))
    body = steer(server, file="t/common.mp4", client="192.0.2.9", explain=1).json()
    assert not any("ams-1." in u for u in body["locations"])
    assert body["decision"]["outcome"] == "hit"  # ams-2 holds it too
    for i in (2, 3):
        server.post_heartbeat(heartbeat(f"ams-{i}", "ams", egress=10 * 10**9))  # saturated
    body = steer(server, file="t/common.mp4", client="192.0.2.9", explain=1).json()
    assert body["decision"]["outcome"] == "health-miss"
    assert {c["site"] for c in body["decision"]["candidates"]} == {"lon", "fra"}
    metrics = samples(requests.get(server.url + "/metrics", timeout=5).text)
    assert value(metrics, "steering_decisions_total", method="prefix", outcome="health-miss") == 1
    assert value(metrics, "steering_health_transitions_total", reason="draining", to="down") == 1
    assert value(metrics, "steering_appliances", status="down") == 3
    fleet = requests.get(server.url + "/v1/fleet", headers=AUTH, timeout=5).json()
    ams1 = fleet["sites"][0]["appliances"][0]
    assert (ams1["id"], ams1["status"], ams1["reason"], ams1["draining"]) == ("ams-1", "down", "draining", True)


def test_metrics_are_one_registry_that_parses(server: ServerThread) -> None:
    """/metrics: the replica's series, the task supervisor's (same registry) and the guard's, all in the
    text format prometheus-client's parser reads, with the types dashboards expect."""
    steer(server, file="t/a.mp4", client="192.0.2.9")
    scraped = requests.get(server.url + "/metrics", timeout=5)
    assert scraped.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    kinds = types(scraped.text)
    assert {name: kinds.get(name) for name in ("steering_decisions", "steering_heartbeats", "steering_errors",
                                                "steering_decision_log_dropped", "steering_task_failures",
                                                "steering_connections")} == {
        "steering_decisions": "counter", "steering_heartbeats": "counter", "steering_errors": "counter",
        "steering_decision_log_dropped": "counter", "steering_task_failures": "counter",
        "steering_connections": "counter"}
    assert {kinds[g] for g in ("steering_appliances", "steering_draining", "steering_prefixes",
                               "steering_uptime_seconds", "steering_connections_open")} == {"gauge"}
    got = samples(scraped.text)
    assert total(got, "steering_decisions_total") == 1
    assert value(got, "steering_fill_plans_adopted_total") == 0  # unlabelled: present from the start
    assert total(got, "steering_appliances") == len(server.replica.state.fleet.appliances)  # up, down, unknown
    assert value(got, "steering_task_up", task="tick") == 1


def test_nothing_up_is_a_503(tmp_path: Path) -> None:
    with ServerThread(write_setup(tmp_path)) as srv:
        r = steer(srv, file="t/a.mp4", client="192.0.2.1")
        assert r.status_code == 503 and r.json()["locations"] == []
        assert requests.get(srv.url + "/healthz", timeout=5).json()["up"] == 0


def test_silent_appliances_go_down_on_time(tmp_path: Path) -> None:
    with ServerThread(write_setup(tmp_path)) as srv:  # interval 0.3 s, K = 3
        report_all(srv)
        sent = time.monotonic()
        wait_until(lambda: requests.get(srv.url + "/healthz", timeout=5).json()["up"] == 0, timeout_s=3)
        assert 0.85 < time.monotonic() - sent < 0.9 + 1.0


def test_key_rotation_without_restart(server: ServerThread) -> None:
    keyfile = server.config_path.parent / "keys.toml"
    old_url = steer(server, file="t/a.mp4", client="192.0.2.1").json()["locations"][0]
    assert "k=k1" in old_url
    old = load_keyring(keyfile)
    keyfile.write_text(f'signing = "k2"\n[keys]\nk1 = "{_b64(old.secret("k1"))}"\nk2 = "{new_secret()}"\n')
    wait_until(lambda: "k=k2" in steer(server, file="t/a.mp4", client="192.0.2.1").json()["locations"][0])
    assert requests.get(server.url + "/healthz", timeout=5).json()["signing_key"] == "k2"
    new_url = steer(server, file="t/a.mp4", client="192.0.2.1").json()["locations"][0]
    master = load_keyring(keyfile)  # appliances accept every listed key (derived): old URLs still play
    for url in (old_url, new_url):
        keys = derive_keyring(master, urlsplit(url).hostname.split(".")[0])
        verify("/t/a.mp4", parse_query(urlsplit(url).query), keys, time.time(), "192.0.2.1")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_a_broken_key_file_keeps_the_running_keys(server: ServerThread) -> None:
    keyfile = server.config_path.parent / "keys.toml"
    keyfile.write_text("signing = 'nope'\n")
    wait_until(lambda: value(requests.get(server.url + "/metrics").text, "steering_reloads_total", result="error"))
    assert steer(server, file="t/a.mp4", client="192.0.2.1").status_code == 200


def test_fleet_reload_on_change_drops_no_request(server: ServerThread) -> None:
    errors: list[object] = []
    stop = threading.Event()

    def hammer() -> None:
        with requests.Session() as s:
            while not stop.is_set():
                try:
                    r = s.get(server.url + "/v1/steer", params={"file": "t/a.mp4", "client": "192.0.2.1"}, headers=AUTH, timeout=5)
                    if r.status_code != 200:
                        errors.append(r.status_code)
                except requests.RequestException as exc:
                    errors.append(exc)

    worker = threading.Thread(target=hammer)
    worker.start()
    try:
        sites = dict(SITES, par=(48.86, 2.35, ["100.64.0.0/10"]))
        (server.config_path.parent / "fleet.toml").write_text(fleet_toml(sites))
        wait_until(lambda: len(requests.get(server.url + "/v1/fleet", headers=AUTH, timeout=5).json()["sites"]) == 4)
        report_all(server)
        server.post_heartbeat(heartbeat("par-1", "par"))
        body = steer(server, file="t/a.mp4", client="100.64.1.1", explain=1).json()
        assert body["decision"]["site"] == "par" and "par-1." in body["locations"][0]
    finally:
        stop.set()
        worker.join(10)
    assert errors == []
    # the appliances kept their state across the reload
    assert requests.get(server.url + "/healthz", timeout=5).json()["up"] == 10


@pytest.fixture()
def geo_db(tmp_path: Path) -> Path:
    """A GeoLite2-City-shaped database: a London city block, a German country-only block."""
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-City", languages=["en"],
                        description="steering test")
    writer.insert_network(IPSet(["81.2.69.0/24"]), {
        "city": {"names": {"en": "London"}}, "country": {"iso_code": "GB"},
        "location": {"latitude": 51.5142, "longitude": -0.0931, "accuracy_radius": MmdbU16(10)}})
    writer.insert_network(IPSet(["2.16.0.0/13", "2001:db8:77::/48"]), {
        "country": {"iso_code": "DE"}, "location": {"latitude": 51.2993, "longitude": 9.491,
                                                    "accuracy_radius": MmdbU16(1000)}})
    path = tmp_path / "GeoLite2-City-test.mmdb"
    writer.to_db_file(str(path))
    return path


def test_geoip_fallback(tmp_path: Path, geo_db: Path) -> None:
    config = write_setup(tmp_path, extra="", health={"missed_reports": 100})
    config.write_text(config.read_text() + f'\n[geo]\ndatabase = "{geo_db}"\nslack_km = 50\n')
    with ServerThread(config) as srv:
        report_all(srv)
        london = steer(srv, file="t/a.mp4", client="81.2.69.160", explain=1).json()["decision"]
        assert (london["method"], london["site"]) == ("geo", "lon")
        # Germany's centroid is ~250-700 km from all three sites: the country spreads over them.
        sites = {steer(srv, file="t/a.mp4", client=f"2.{16 + i % 8}.{i}.1", explain=1).json()["decision"]["site"]
                 for i in range(60)}
        assert sites == {"ams", "fra", "lon"}
        v6 = steer(srv, file="t/a.mp4", client="2001:db8:77::5", explain=1).json()["decision"]
        assert v6["method"] == "geo"
        nowhere = steer(srv, file="t/a.mp4", client="8.8.8.8", explain=1).json()["decision"]
        assert (nowhere["method"], nowhere["site"]) == ("default", "ams")
        prefix = steer(srv, file="t/a.mp4", client="203.0.113.5", explain=1).json()["decision"]
        assert prefix["method"] == "prefix"  # the prefix wins over geo
        metrics = requests.get(srv.url + "/metrics", timeout=5).text
        assert total(metrics, "steering_decisions_total", method="geo") == 62  # London, Germany's 60, v6
        assert total(metrics, "steering_decisions_total", method="default") == 1


def test_anonymous_and_unentitled_callers_are_refused(server: ServerThread) -> None:
    """Minting URLs, reading the fleet or a manifest needs a caller: anonymous → 401, a caller
    without the role or an appliance asking for another's manifest → 403, each before any work."""
    anonymous = [requests.get(server.url + "/v1/steer", params={"file": "t/a.mp4", "client": "192.0.2.1"}, timeout=5),
                 requests.post(server.url + "/v1/steer", json={"files": ["t/a.mp4"]}, timeout=5),
                 requests.get(server.url + "/v1/fleet", timeout=5),
                 requests.get(server.url + "/v1/fill-manifest", params={"appliance": "ams-1"}, timeout=5),
                 requests.get(server.url + "/v1/fleet", headers={"Authorization": "Bearer guessed"}, timeout=5)]
    for r in anonymous:
        assert r.status_code == 401 and r.json()["error"] == "unauthorized", r.text
    target = "/v1/fill-manifest?appliance=ams-1"
    ams2 = derive_keyring(server.keys, "ams-2")
    r = requests.get(server.url + target, timeout=5,
                     headers={"Authorization": appliance_authorization(ams2, "ams-2", "GET", target, time.time())})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    ams1 = derive_keyring(server.keys, "ams-1")
    r = requests.get(server.url + target, timeout=5,
                     headers={"Authorization": appliance_authorization(ams1, "ams-1", "GET", target, time.time())})
    assert r.status_code == 404  # its own: allowed (no plan in this setup)
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200  # open: no URLs, no fleet


def test_a_caller_gets_only_its_roles(tmp_path: Path) -> None:
    token, digest = new_token()
    config = write_setup(tmp_path)
    (tmp_path / "callers.toml").write_text(f'[callers.dashboard]\ntoken_sha256 = "{digest}"\nroles = ["fleet"]\n')
    with ServerThread(config) as srv:
        auth = {"Authorization": f"Bearer {token}"}
        assert requests.get(srv.url + "/v1/fleet", headers=auth, timeout=5).status_code == 200
        r = requests.get(srv.url + "/v1/steer", params={"file": "t/a.mp4", "client": "192.0.2.1"}, headers=auth,
                         timeout=5)
        assert r.status_code == 403 and r.json()["error"] == "forbidden"
        assert requests.get(srv.url + "/v1/fleet", headers=AUTH, timeout=5).status_code == 401  # not listed
