"""Steering's BGP-learned routes without a router (steering.core.routes and the localiser): updates and
gaps, the decision order (longest prefix over static and learned, then AS path, then MED, only live
appliances), static prefixes as the override, and a site whose appliances heard different routes."""
from __future__ import annotations

import pytest

from contracts.heartbeat import Route, RoutesUpdate
from contracts.ids import ApplianceId, SiteId
from steering.core.inventory import Verdict
from steering.core.locate import LocateMethod, Localiser
from steering.core.prefixes import parse_address
from steering.core.routes import RouteIndex
from steer_helpers import core_fleet

A = ApplianceId
FLEET = core_fleet({
    "ams": (52.37, 4.90, ["192.0.2.0/24"], [("ams-1", 10), ("ams-2", 10)]),
    "fra": (50.11, 8.68, ["198.51.100.0/24"], [("fra-1", 10)]),
    "lon": (51.51, -0.13, [], [("lon-1", 10)]),
})
ALL = frozenset(FLEET.appliances)


def full(gen: int, *routes: Route) -> RoutesUpdate:
    return RoutesUpdate(gen, True, routes)


def delta(base: int, gen: int, announced=(), withdrawn=()) -> RoutesUpdate:
    return RoutesUpdate(gen, False, tuple(announced), tuple(withdrawn), base)


def R(prefix: str, path=(64500,), med=None) -> Route:  # noqa: N802 - reads like the wire
    return Route(prefix, tuple(path), med)


def test_updates_and_gaps_follow_the_inventory_rules() -> None:
    idx = RouteIndex()
    assert idx.apply(A("lon-1"), full(5, R("10.0.0.0/8"))).verdict is Verdict.REPLACE
    assert idx.apply(A("lon-1"), delta(5, 6, [R("10.1.0.0/16")], ["10.0.0.0/8"])).verdict is Verdict.APPLY
    assert set(idx.routes_of(A("lon-1"))) == {"10.1.0.0/16"} and idx.prefixes == 1
    gap = idx.apply(A("lon-1"), delta(9, 10, [R("10.2.0.0/16")]))
    assert gap.verdict is Verdict.GAP and gap.need_full and gap.generation == 6
    assert set(idx.routes_of(A("lon-1"))) == {"10.1.0.0/16"}  # the held table keeps serving
    idx.apply(A("lon-1"), full(11, R("10.3.0.0/16")))
    assert set(idx.routes_of(A("lon-1"))) == {"10.3.0.0/16"} and idx.prefixes == 1
    idx.drop(A("lon-1"))
    assert idx.prefixes == 0 and not idx and idx.generation(A("lon-1")) is None


def located(heard: dict[str, list[Route]], client: str, live=ALL) -> tuple[LocateMethod, tuple[SiteId, ...]] | None:
    idx = RouteIndex()
    for gen, (appliance, routes) in enumerate(heard.items(), 1):
        idx.apply(A(appliance), full(gen, *routes))
    loc = Localiser(FLEET, SiteId("ams"), routes=idx, live=live).by_prefix(parse_address(client))
    return None if loc is None else (loc.method, loc.order.sites[:1])


@pytest.mark.parametrize("heard, client, live, expect", [
    ({}, "203.0.113.9", ALL, None),
    ({"lon-1": [R("203.0.113.0/24")]}, "203.0.113.9", ALL, ("bgp", "lon")),
    ({"lon-1": [R("2001:db8:1::/48")]}, "2001:db8:1::9", ALL, ("bgp", "lon")),
    ({"lon-1": [R("192.0.2.0/24")]}, "192.0.2.9", ALL, ("prefix", "ams")),  # equal length: static wins
    ({"lon-1": [R("192.0.2.0/25")]}, "192.0.2.9", ALL, ("bgp", "lon")),  # more specific than static
    ({"lon-1": [R("192.0.2.0/25")]}, "192.0.2.200", ALL, ("prefix", "ams")),  # outside it
    ({"lon-1": [R("192.0.0.0/16")]}, "192.0.2.9", ALL, ("prefix", "ams")),  # less specific than static
    ({"lon-1": [R("10.0.0.0/8")], "fra-1": [R("10.1.0.0/16")]}, "10.1.2.3", ALL, ("bgp", "fra")),
    ({"lon-1": [R("10.0.0.0/8", (1, 2))], "fra-1": [R("10.0.0.0/8", (1,))]}, "10.1.2.3", ALL, ("bgp", "fra")),
    ({"lon-1": [R("10.0.0.0/8", (1,), 5)], "fra-1": [R("10.0.0.0/8", (2,), 50)]}, "10.1.2.3", ALL,
     ("bgp", "lon")),
    ({"lon-1": [R("10.0.0.0/8", (1,))], "fra-1": [R("10.0.0.0/8", (1,), 0)]}, "10.1.2.3", ALL, "either"),
    ({"lon-1": [R("10.0.0.0/8", (1,), 1)], "fra-1": [R("10.0.0.0/8", (1,))]}, "10.1.2.3", ALL, ("bgp", "fra")),
    ({"lon-1": [R("10.0.0.0/8")], "fra-1": [R("10.1.0.0/16")]}, "10.1.2.3", ALL - {"fra-1"}, ("bgp", "lon")),
    ({"fra-1": [R("10.1.0.0/16")]}, "10.1.2.3", ALL - {"fra-1"}, None),
], ids=["nothing-heard", "learned", "learned-v6", "static-overrides-equal", "more-specific-wins",
        "outside-the-more-specific", "static-more-specific", "longest-prefix", "shorter-as-path", "path-before-med",
        "absent-med-is-zero-tie", "lower-med", "dead-appliance-hears-nothing", "nothing-live"])
def test_decision_order(heard, client, live, expect) -> None:
    got = located(heard, client, live)
    if expect == "either":  # a tie: spread over both sites by the client's prefix
        assert got is not None and got[0] == "bgp" and got[1][0] in ("lon", "fra")
    else:
        assert got == (None if expect is None else (LocateMethod(expect[0]), (SiteId(expect[1]),)))


def test_a_tie_spreads_clients_over_the_sites_that_heard_it() -> None:
    idx = RouteIndex()
    idx.apply(A("lon-1"), full(1, R("10.0.0.0/8")))
    idx.apply(A("fra-1"), full(1, R("10.0.0.0/8")))
    loc = Localiser(FLEET, SiteId("ams"), routes=idx, live=ALL)
    firsts = {loc.by_prefix(parse_address(f"10.{i}.0.1")).order.sites[0] for i in range(64)}
    assert firsts == {"lon", "fra"}


def test_the_route_used_is_named() -> None:
    idx = RouteIndex()
    idx.apply(A("lon-1"), full(1, Route("10.1.0.0/16", (64500, 64510), 7, 100, ("64500:1",))))
    idx.apply(A("fra-1"), full(1, R("10.1.0.0/16", (64500, 64510, 64520))))
    loc = Localiser(FLEET, SiteId("ams"), routes=idx, live=ALL)
    assert loc.route_of(parse_address("10.1.2.3")) == {
        "source": "bgp", "prefix": "10.1.0.0/16", "as_path": [64500, 64510], "med": 7, "local_pref": 100,
        "communities": ["64500:1"], "heard_by": ["lon-1"], "also_heard_by": ["fra-1"]}
    assert loc.route_of(parse_address("192.0.2.1")) == {"source": "static", "prefix": "192.0.2.0/24",
                                                        "sites": ["ams"]}
    assert loc.route_of(parse_address("203.0.113.1")) is None


def test_appliances_of_a_site_hearing_different_routes_are_found() -> None:
    idx = RouteIndex()
    same = (R("10.0.0.0/8"), R("10.1.0.0/16", med=5))
    idx.apply(A("ams-1"), full(1, *same))
    idx.apply(A("ams-2"), full(1, *same))
    assert idx.compare([A("ams-1"), A("ams-2")]).consistent
    idx.apply(A("ams-2"), delta(1, 2, [R("10.1.0.0/16", med=9)]))  # another MED
    cmp = idx.compare([A("ams-1"), A("ams-2")])
    assert not cmp.consistent and "10.1.0.0/16" in cmp.examples and len(cmp.differing) == 1
    idx.apply(A("ams-2"), delta(2, 3, [R("10.1.0.0/16", med=5)], []))
    assert idx.compare([A("ams-1"), A("ams-2")]).consistent  # put right again
    idx.apply(A("ams-2"), delta(3, 4, [], ["10.0.0.0/8"]))
    cmp = idx.compare([A("ams-1"), A("ams-2")])
    assert not cmp.consistent and cmp.examples == ("10.0.0.0/8",)
