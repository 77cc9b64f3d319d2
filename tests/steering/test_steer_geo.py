"""Great-circle distance, equally-near sites, and spreading a country centroid by capacity."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from steering.core.geo import GeoPoint, by_distance, equally_near, great_circle_km
from steering.core.locate import LocateMethod, Localiser
from steering.core.prefixes import parse_address
from steering.geoip import GeoDatabase
from steer_helpers import core_fleet

GBPS = 10**9


@pytest.mark.parametrize("a, b, km", [
    ((52.37, 4.90), (51.51, -0.13), 358),  # Amsterdam - London
    ((52.37, 4.90), (50.11, 8.68), 365),  # Amsterdam - Frankfurt
    ((40.71, -74.01), (51.51, -0.13), 5570),  # New York - London
    ((0, 0), (0, 180), 20015),  # half the equator
    ((10, 10), (10, 10), 0),
], ids=["ams-lon", "ams-fra", "nyc-lon", "antipode", "same-point"])
def test_great_circle_km(a: tuple[float, float], b: tuple[float, float], km: float) -> None:
    assert great_circle_km(*a, *b) == pytest.approx(km, rel=0.01, abs=1)


def test_equally_near_uses_the_slack() -> None:
    ordered = by_distance(52.0, 5.0, [("a", 52.0, 5.1), ("b", 52.0, 5.6), ("c", 48.0, 2.0)])
    assert [s for _, s in ordered] == ["a", "b", "c"]
    assert equally_near(ordered, 10) == ("a",)
    assert equally_near(ordered, 50) == ("a", "b")
    assert equally_near([], 50) == ()


# A country whose centroid (50.0, 10.0) is about as far from three sites of different capacity.
FLEET = core_fleet({
    "north": (51.0, 10.0, [], [("n1", 10 * GBPS)]),
    "south": (49.0, 10.0, [], [("s1", 30 * GBPS)]),
    "west": (50.0, 8.6, [], [("w1", 60 * GBPS)]),
    "far": (40.0, -3.7, ["192.0.2.0/24"], [("f1", 100 * GBPS)]),
})


def clients(n: int) -> list[str]:
    return [f"10.{i // 256}.{i % 256}.9" for i in range(n)]


def test_a_country_centroid_spreads_by_capacity() -> None:
    loc = Localiser(FLEET, "far", geo_slack_km=50)
    centroid = GeoPoint(50.0, 10.0, accuracy_km=500)
    first = Counter(loc.by_point(parse_address(ip), centroid).order.sites[0] for ip in clients(4000))
    assert set(first) == {"north", "south", "west"}  # "far" is not equally near
    assert first["west"] / 4000 == pytest.approx(0.6, abs=0.05)
    assert first["south"] / 4000 == pytest.approx(0.3, abs=0.05)
    assert first["north"] / 4000 == pytest.approx(0.1, abs=0.04)


def test_one_client_prefix_always_gets_the_same_site() -> None:
    loc = Localiser(FLEET, "far")
    centroid = GeoPoint(50.0, 10.0, accuracy_km=500)
    sites = {loc.by_point(parse_address(f"10.7.7.{i}"), centroid).order.sites for i in range(1, 255)}
    assert len(sites) == 1  # the whole /24 shares its site order


def test_a_precise_point_takes_the_nearest_site() -> None:
    loc = Localiser(FLEET, "far", geo_slack_km=20)
    got = loc.by_point(parse_address("10.0.0.1"), GeoPoint(50.95, 10.0, accuracy_km=5))
    assert got.method is LocateMethod.GEO
    assert got.order.sites[:2] == ("north", "west")
    assert set(got.order.sites) == set(FLEET.sites)


def test_prefix_then_default() -> None:
    loc = Localiser(FLEET, "north")
    by_prefix = loc.by_prefix(parse_address("192.0.2.1"))
    assert by_prefix is not None and by_prefix.method is LocateMethod.PREFIX and by_prefix.order.sites[0] == "far"
    assert loc.by_prefix(parse_address("10.0.0.1")) is None
    default = loc.by_default()
    assert default.method is LocateMethod.DEFAULT and default.order.sites[0] == "north"


def test_a_prefix_announced_to_two_sites_spreads_by_capacity() -> None:
    fleet = core_fleet({"a": (50.0, 8.0, ["10.0.0.0/8"], [("a1", 10 * GBPS)]),
                        "b": (50.1, 8.1, ["10.0.0.0/8"], [("b1", 30 * GBPS)])})
    loc = Localiser(fleet, "a")
    first = Counter(loc.by_prefix(parse_address(ip)).order.sites[0] for ip in clients(2000))
    assert first["b"] / 2000 == pytest.approx(0.75, abs=0.05)


def test_unknown_default_site_is_refused() -> None:
    with pytest.raises(ValueError):
        Localiser(FLEET, "nowhere")


REAL_DB = os.environ.get("GEOLITE2_CITY_MMDB")


@pytest.mark.skipif(not REAL_DB, reason="set GEOLITE2_CITY_MMDB to a real GeoLite2-City.mmdb to run")
def test_a_real_geolite2_city_database() -> None:
    db = GeoDatabase(Path(REAL_DB or ""))
    assert "City" in db.description
    loc = Localiser(FLEET, "far")
    for address in ("8.8.8.8", "81.2.69.142", "2001:4860:4860::8888", "192.168.1.1"):
        point = db.point(address)
        if point is not None:
            assert -90 <= point.latitude <= 90 and -180 <= point.longitude <= 180 and point.accuracy_km >= 0
            assert loc.by_point(parse_address(address), point).method is LocateMethod.GEO
    assert db.point("192.168.1.1") is None  # private space is not in the database
    db.close()


def test_geo_database_built_with_mmdb_writer(tmp_path: Path) -> None:
    from mmdb_writer import MMDBWriter, MmdbU16
    from netaddr import IPSet

    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-City", languages=["en"])
    writer.insert_network(IPSet(["81.2.69.0/24"]), {"city": {"names": {"en": "London"}},
                                                    "location": {"latitude": 51.5, "longitude": -0.1,
                                                                 "accuracy_radius": MmdbU16(10)}})
    writer.insert_network(IPSet(["2.16.0.0/13"]), {"country": {"iso_code": "DE"},
                                                   "location": {"latitude": 51.3, "longitude": 9.5}})
    writer.insert_network(IPSet(["5.5.0.0/16"]), {"country": {"iso_code": "XX"}})
    writer.to_db_file(str(tmp_path / "city.mmdb"))
    db = GeoDatabase(tmp_path / "city.mmdb")
    assert db.point("81.2.69.1") == GeoPoint(51.5, -0.1, 10.0)
    assert db.point("2.17.0.1") == GeoPoint(51.3, 9.5, 500.0)  # country centroid: widened
    assert db.point("5.5.5.5") is None  # no location
    assert db.point("8.8.8.8") is None
    db.close()


def test_a_missing_database_is_a_config_error(tmp_path: Path) -> None:
    from contracts.structconf import ConfigError

    with pytest.raises(ConfigError, match="geo.database"):
        GeoDatabase(tmp_path / "none.mmdb")
