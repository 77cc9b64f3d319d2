"""Coverage-zone files as Traffic Control operators have them (steering.czf): fixtures shaped like
Traffic Router's test resources (tests/steering/czf/: string coordinates, host bits, upper-case hex,
networks in several zones, revision/customerName, malformed zones among good ones, deep zones), read
as tables; then `steering check-config`, and real steering answers (explain=1) for addresses in each
zone: longest prefix wins, deep pins, and a duplicated network resolved by the stated rule."""
from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
import requests

from contracts.structconf import ConfigError
from steer_helpers import AUTH, ServerThread, heartbeat, write_setup
from steering.cli import check_config
from steering.czf import read_czf
from steering.fleetconf import FleetInfo, import_fleet, parse_fleet, read_fleet

FIXTURES = Path(__file__).with_name("czf")
CG = [f"cache-group-{n}" for n in range(4)]


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def sites_of(fleet: Any, network: str) -> set[str]:
    return set(fleet.prefixes.get(network) or ())


# ---- reading the fixtures -----------------------------------------------------------------------

@pytest.mark.parametrize("name, revision, customer, sites, masked, duplicated, skipped", [
    ("traffic_router.json", "Wed May  4 15:04:01 2016", "Acme", {*CG, "metro"}, 12,
     {"203.0.113.0/24": {CG[0], CG[1]}, "2001:dead:beef::/48": set(CG), "2001:cafe:f000::/37": set(CG),
      "2601:ac00::/26": set(CG)}, []),
    ("malformed_zones.json", "Thu May  5 09:00:00 2016", "Acme", {CG[0], CG[1], "metro"}, 6,
     {"203.0.113.0/24": {CG[0], CG[1]}, "2001:dead:beef::/48": {CG[0], CG[1]}}, [
         "coverageZones.cache-group-2.coordinates.latitude: must be a number or a numeric string, not 'north'",
         "coverageZones.cache-group-3.netwrok: unknown setting"]),
    ("deep.json", "20160506", "Acme", {*CG, "metro", "isp-a"}, 12,
     {"203.0.113.0/24": {CG[0], CG[1]}, "2601:ac00::/26": set(CG)},
     ["deepCoverageZones.partial.caches: names some appliances of zone 'cache-group-3' but not cg3-2: not supported"]),
], ids=["traffic-router", "malformed-zones-among-good", "deep"])
def test_fixture_reads_as_traffic_router_does(name: str, revision: str, customer: str, sites: set[str], masked: int,
                                              duplicated: dict[str, set[str]], skipped: list[str]) -> None:
    fleet, info = read_fleet(FIXTURES / name)
    assert (info.format, info.revision, info.customer_name) == ("czf", revision, customer)
    assert set(fleet.sites) == sites
    host_bits = [w for w in info.warnings if "has host bits set" in w]
    assert len(host_bits) == masked  # one line per masked network, naming zone, index and value
    assert all(w.startswith("coverageZones.") or w.startswith("deepCoverageZones.") for w in host_bits)
    for network, owners in duplicated.items():
        assert sites_of(fleet, network) == owners
        assert any(w.startswith(f"{network}: listed in {len(owners)} zones") for w in info.warnings)
    assert len(info.skipped) == len(skipped)
    for got, want in zip(info.skipped, skipped):
        assert got.startswith(want) and "skipped" in got


@pytest.mark.parametrize("given, read_as", [
    ("2001:CAFE:F00D:1::/37", "2001:cafe:f000::/37"),
    ("2601:AC1D:3::/26", "2601:ac00::/26"),
    ("2001:DEAD:BEEF:0::/48", "2001:dead:beef::/48"),
    ("203.0.113.9/24", "203.0.113.0/24"),
    (" 12.34.1.0/24 ", "12.34.1.0/24"),
    ("192.0.2.7", "192.0.2.7/32"),
], ids=["v6-host-bits", "v6-/26", "upper-case-only", "v4-host-bits", "spaces", "bare-address"])
def test_networks_are_normalised(given: str, read_as: str) -> None:
    family = "network6" if ":" in given else "network"
    mapping = {"coverageZones": {"z": {family: [given], "coordinates": {"latitude": "1", "longitude": "2"}}}}
    fleet, info = import_fleet(mapping)
    assert sites_of(fleet, read_as) == {"z"}
    masked = ipaddress.ip_interface(given.strip()).ip != ipaddress.ip_network(read_as).network_address
    assert [w for w in info.warnings if "host bits" in w] == (
        [f"coverageZones.z.{family}[0]: {given} has host bits set; read as {read_as} (fix it at the source)"]
        if masked else [])


@pytest.mark.parametrize("latitude, longitude, expected", [
    ("39.117800", "-106.480250", (39.1178, -106.48025)),
    ("48.0", "-80", (48.0, -80.0)),
    (" 35 ", -80, (35.0, -80.0)),
    (52.37, 4.9, (52.37, 4.9)),
], ids=["strings", "integer-string", "padded-and-mixed", "numbers"])
def test_coordinates_as_numbers_or_numeric_strings(latitude: Any, longitude: Any, expected: tuple) -> None:
    mapping = {"coverageZones": {"z": {"coordinates": {"latitude": latitude, "longitude": longitude}}}}
    site = parse_fleet(mapping).sites["z"]
    assert (site.latitude, site.longitude) == expected


ZONE = {"network": ["192.0.2.0/24"], "coordinates": {"latitude": "52.37", "longitude": "4.90"},
        "appliances": [{"id": "z-1", "base_url": "http://z-1", "capacity_gbps": 10}]}


def czf(**zone_changes: Any) -> dict[str, Any]:
    return {"coverageZones": {"z": {**ZONE, **zone_changes}}}


@pytest.mark.parametrize("mapping, message", [
    (czf(coordinates={"latitude": "north", "longitude": "4"}),
     "coverageZones.z.coordinates.latitude: must be a number or a numeric string, not 'north'"),
    (czf(coordinates={"latitude": "NaN", "longitude": "4"}), "coverageZones.z.coordinates.latitude: must be within"),
    (czf(coordinates={"latitude": "1", "longitude": "181"}), "coverageZones.z.coordinates.longitude: must be within"),
    (czf(coordinates={"latitude": True, "longitude": "4"}), "coverageZones.z.coordinates.latitude: must be a number"),
    (czf(coordinates={"latitude": "1", "longitude": "2", "altitude": "3"}),
     "coverageZones.z.coordinates.altitude: unknown setting"),
    (czf(netwrok=["192.0.2.0/24"]), "coverageZones.z.netwrok: unknown setting"),
    (czf(network=["2001:db8::/32"]), "coverageZones.z.network[0]: 2001:db8::/32 is not an IPv4 network"),
    (czf(network6=["2001:zz::/32"]), "coverageZones.z.network6[0]"),
    ({**czf(), "revison": "x"}, "revison: unknown setting"),
    ({**czf(), "revision": ["x"]}, "revision: must be a string"),
    ({"deepCoverageZones": {"d": {"network": ["192.0.2.0/24"], "caches": ["host1"]}}},
     "deepCoverageZones: a deep coverage zone file alone is not supported"),
    ({**czf(), "deepCoverageZones": {"d": {"network": ["192.0.2.0/25"], "caches": ["host1"]}}},
     "deepCoverageZones.d.caches[0]: 'host1' is not an appliance of any coverage zone"),
    ({**czf(), "deepCoverageZones": {"d": {"network": ["192.0.2.0/25"], "caches": []}}},
     "deepCoverageZones.d.caches: must name at least one cache"),
    ({**czf(), "deepCoverageZones": {"d": {"network": ["192.0.2.0/25"], "caches": ["z-1"], "ttl": 1}}},
     "deepCoverageZones.d.ttl: unknown setting"),
], ids=["latitude-word", "latitude-nan", "longitude-range", "latitude-bool", "unknown-coordinate", "unknown-zone-key",
        "v6-in-network", "bad-v6", "unknown-top-key", "revision-type", "dczf-alone", "deep-unknown-cache",
        "deep-no-caches", "deep-unknown-key"])
def test_errors_name_the_dotted_key(mapping: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_fleet(mapping)  # strict: the first bad zone raises
    assert message in str(err.value)


def test_a_bad_zone_keeps_its_last_good_version_and_the_others_move_on() -> None:
    _, first = read_fleet(FIXTURES / "traffic_router.json")
    fleet, info = import_fleet(fixture("malformed_zones.json"), first)
    assert set(fleet.sites) == {*CG, "metro"}  # 2 and 3 as they were
    assert sites_of(fleet, "12.34.2.0/24") == {CG[2]} and sites_of(fleet, "2001:dead:beef::/48") == set(CG)
    assert [s.split(" — ")[1] for s in info.skipped] == ["skipped; its last good version stays in service"] * 2
    assert info.revision == "Thu May  5 09:00:00 2016"
    # ... and once the source is fixed, the new version replaces the kept one
    fixed = fixture("traffic_router.json")
    fixed["coverageZones"][CG[2]]["network"] = ["12.34.22.0/24"]
    fleet, info = import_fleet(fixed, info)
    assert sites_of(fleet, "12.34.22.0/24") == {CG[2]} and not sites_of(fleet, "12.34.2.0/24") and not info.skipped


def test_a_kept_zone_gives_way_when_its_appliance_moved() -> None:
    _, first = read_fleet(FIXTURES / "traffic_router.json")
    moved = fixture("traffic_router.json")
    moved["coverageZones"][CG[2]]["coordinates"]["latitude"] = "north"
    moved["coverageZones"][CG[1]]["appliances"].append({"id": "cg2-1", "base_url": "http://x", "capacity_gbps": 1})
    fleet, info = import_fleet(moved, first)
    assert CG[2] not in fleet.sites and fleet.appliances["cg2-1"].site == CG[1]
    assert "its last good version cannot stay either" in info.skipped[0]


def test_a_bad_deep_zone_keeps_its_last_good_version() -> None:
    _, first = read_fleet(FIXTURES / "deep.json")
    broken = fixture("deep.json")
    broken["deepCoverageZones"]["isp-a-deep"]["caches"] = []
    fleet, info = import_fleet(broken, first)
    assert sites_of(fleet, "12.34.0.128/25") == {"isp-a"} and sites_of(fleet, "111.222.1.0/24") == {"isp-a"}
    assert info.skipped[0].startswith("deepCoverageZones.isp-a-deep.caches: must name at least one cache")
    assert info.skipped[0].endswith("its last good version stays in service")
    gone = fixture("deep.json")  # ... unless its caches are gone from the coverage zones
    gone["deepCoverageZones"]["isp-a-deep"]["caches"] = []
    del gone["coverageZones"]["isp-a"]
    fleet, info = import_fleet(gone, first)
    assert not sites_of(fleet, "12.34.0.128/25") and sites_of(fleet, "111.222.1.0/24") == {CG[1]}
    assert info.skipped[0].endswith("not served (no earlier version that still fits)")


def test_no_usable_zone_is_an_error_even_when_lenient() -> None:
    with pytest.raises(ConfigError, match="coverageZones: no usable zone"):
        import_fleet(czf(coordinates={"latitude": "north", "longitude": "4"}))


def test_a_deep_zone_must_name_whole_sites() -> None:
    with pytest.raises(ConfigError, match="not supported — steering pins networks to whole sites"):
        read_czf(fixture("deep.json"), strict=True)


def test_toml_fleet_stays_strict_and_has_no_revision() -> None:
    fleet, info = import_fleet({"sites": [{"id": "a", "latitude": 1, "longitude": 2, "prefixes": ["192.0.2.0/24"]}]})
    assert info == FleetInfo(format="toml") and set(fleet.sites) == {"a"}
    with pytest.raises(ConfigError, match="has host bits set"):
        import_fleet({"sites": [{"id": "a", "latitude": 1, "longitude": 2, "prefixes": ["192.0.2.1/24"]}]})


# ---- check-config -------------------------------------------------------------------------------

def czf_setup(folder: Path, name: str, **kw: Any) -> Path:
    """A steering config whose fleet file is the fixture `name` (as fleet.json)."""
    config = write_setup(folder, default_site=kw.pop("default_site", CG[0]), health={"missed_reports": 100}, **kw)
    (folder / "fleet.json").write_text((FIXTURES / name).read_text())
    config.write_text(config.read_text().replace('fleet_file = "fleet.toml"', 'fleet_file = "fleet.json"'))
    return config


@pytest.mark.parametrize("name, code, revision, errors", [
    ("traffic_router.json", 0, "'Wed May  4 15:04:01 2016' (Acme)", 0),
    ("malformed_zones.json", 1, "'Thu May  5 09:00:00 2016' (Acme)", 2),
    ("deep.json", 1, "'20160506' (Acme)", 1),
], ids=["clean", "malformed-zones", "deep-partial"])
def test_check_config_shows_revision_warnings_and_skipped_zones(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                name: str, code: int, revision: str,
                                                                errors: int) -> None:
    assert check_config(czf_setup(tmp_path, name)) == code
    out, err = capsys.readouterr()
    assert f"revision {revision}" in out
    assert "  warning: coverageZones.cache-group-1.network6[1]: 2001:CAFE:F00D:1::/37 has host bits set" in out
    assert "  warning: 2001:dead:beef::/48: listed in" in out
    assert err.count("error: ") == errors


# ---- steering answers ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def deep_server(tmp_path_factory: pytest.TempPathFactory):
    config = czf_setup(tmp_path_factory.mktemp("czf"), "deep.json")
    with ServerThread(config) as srv:
        for appliance in srv.replica.loaded.fleet.appliances.values():
            assert srv.post_heartbeat(heartbeat(appliance.id, appliance.site)).status_code == 200
        yield srv


def explain(srv: ServerThread, client: str) -> dict[str, Any]:
    r = requests.get(srv.url + "/v1/steer", params={"file": "t/a.mp4", "client": client, "explain": 1},
                     headers=AUTH, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["decision"]


@pytest.mark.parametrize("client, site", [
    ("12.34.0.5", CG[0]), ("12.34.1.5", CG[1]), ("12.34.2.5", CG[2]), ("12.34.3.5", CG[3]),
    ("10.3.15.250", CG[3]),  # 10.3.0.0/20
    ("100.1.200.1", CG[1]),  # 100.1.0.0/16 beats metro's 100.0.0.0/8
    ("100.200.0.1", "metro"),  # only the /8
    ("2601:ac1d:2::1", None),  # the masked /26 of every cache group: see the duplicate test
    ("12.34.0.200", "isp-a"),  # deep 12.34.0.128/25 beats cache-group-0's /24
    ("111.222.1.9", "isp-a"),  # deep pin takes the identical network from cache-group-1
    ("111.222.2.9", CG[2]),
    ("1234:5678::1", "isp-a"),  # deep network6
    ("12.34.3.7", CG[3]),  # the "partial" deep zone (a subset of cache-group-3) was refused
], ids=["cg0", "cg1", "cg2", "cg3", "/20", "/16-over-/8", "/8", "masked-v6", "deep-longer", "deep-identical",
        "beside-deep", "deep-v6", "partial-deep-refused"])
def test_steering_answers_per_zone(deep_server: ServerThread, client: str, site: str | None) -> None:
    decision = explain(deep_server, client)
    assert decision["method"] == "prefix"
    if site is None:
        assert decision["site"] in CG
    else:
        assert decision["site"] == site and decision["candidates"][0]["site"] == site


def test_fleet_json_shows_revision_and_source(deep_server: ServerThread) -> None:
    body = requests.get(deep_server.url + "/v1/fleet", headers=AUTH, timeout=5).json()
    assert body["revision"] == "20160506"
    src = body["fleet_source"]
    assert src["format"] == "czf" and src["customer_name"] == "Acme" and src["source"].endswith("fleet.json")
    assert len(src["skipped"]) == 1 and src["warnings_count"] == len(src["warnings"]) == 17
    health = requests.get(deep_server.url + "/healthz", timeout=5).json()
    assert health["status"] == "degraded" and "fleet" in health["degraded"]  # a deep zone was left out
    assert health["fleet"]["revision"] == "20160506" and len(health["fleet"]["skipped"]) == 1


def test_a_network_in_several_zones_follows_the_stated_rule(deep_server: ServerThread) -> None:
    """2001:cafe:f000::/37 is in all four cache groups: each client /48 gets one of them first (by
    capacity-weighted rendezvous: the same one for every address of the /48), another of them next,
    and the network's clients spread over the zones."""
    firsts = set()
    for i in range(32):
        prefix = ipaddress.IPv6Network("2001:cafe:f000::/37")[0] + (i * 61 << 80)  # 32 of its 2048 /48s
        a, b = explain(deep_server, str(prefix + 1)), explain(deep_server, str(prefix + 0xFFFF))
        assert a == b and a["method"] == "prefix"  # one /48, one answer
        sites = [c["site"] for c in a["candidates"]]
        assert a["site"] in CG and sites[0] == a["site"]
        assert sites[-1] in CG and sites[-1] != a["site"]  # the failover: another of the network's zones
        firsts.add(a["site"])
    assert len(firsts) > 1
