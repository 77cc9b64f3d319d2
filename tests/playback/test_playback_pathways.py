"""Pathways that mean what they say (playback.core.pathways, playback.core.steer, the documents in
playback.core.manifests), as tables over the pure core: one pathway per site named after it, holders
before non-holders, no second pathway with the same appliances, stable ids and PATHWAY-CLONES, and a
steering manifest that heeds the player's `_HLS_pathway` / `_HLS_throughput`."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from contracts.catalog import from_dict
from playback.core import manifests, steer
from playback.core.pathways import Where, build_pathways, where_in

SIG = "?e=9&k=k1&c=127.0.0.0/24&s=abc"
FLEET = {"sites": [
    {"id": "ams", "appliances": [{"id": "ams-1", "base_url": "http://ams-1:80"}, {"id": "ams-2", "base_url": "http://ams-2:80"}]},
    {"id": "fra", "appliances": [{"id": "fra-1", "base_url": "http://fra-1:80"}, {"id": "fra-2", "base_url": "http://fra-2:80"}]},
    {"id": "lon", "appliances": [{"id": "lon-1", "base_url": "http://lon-1:80"}]}]}
WHERE = where_in(steer.fleet_sites(FLEET))


def rendition(name, kind, bw):
    r = {"name": name, "type": kind, "key": f"files/t1/v0123456789abcdef/{name}.mp4", "size": 1000, "xxh3": "0" * 32,
         "codec": "avc1.42c00c" if kind == "video" else "mp4a.40.2", "bandwidth": bw, "averageBandwidth": bw,
         "duration": 4.0, "init": {"offset": 0, "length": 10}, "index": {"offset": 10, "length": 5},
         "segments": [[15, 500, 2.0], [515, 485, 2.0]], "playlist": f"files/t1/v0123456789abcdef/{name}.m3u8"}
    r.update({"width": 320, "height": 180, "frameRate": 24.0} if kind == "video" else
             {"language": "en", "channels": 1, "sampleRate": 48000})
    return r


ENTRY = from_dict({"schema": 1, "id": "t1", "title": "T One", "genres": [], "languages": ["en"], "releaseDate": None,
                   "duration": 4.0, "version": "v0123456789abcdef", "master": "m", "dash": "d", "poster": None,
                   "assets": [], "source": {}, "ingestedAt": "", "renditions": [
                       rendition("lo", "video", 200_000), rendition("hi", "video", 900_000),
                       rendition("aud", "audio", 64_000)]})
KEY = {r.name: r.key for r in ENTRY.renditions}


def answer(spec: dict[str, str]) -> tuple[dict[str, list[str]], dict[str, list[bool]]]:
    """{rendition: "ams-1+ ams-2- fra-1"}: steering's ranked locations, + holds, - lacks, bare: unsaid."""
    locations, holds = {}, {}
    for name, text in spec.items():
        items = text.split()
        locations[KEY[name]] = [f"http://{i.rstrip('+-')}:80/{KEY[name]}{SIG}" for i in items]
        if all(i[-1] in "+-" for i in items):
            holds[KEY[name]] = [i.endswith("+") for i in items]
    return locations, holds


ALL_HELD = {"lo": "ams-1+ ams-2+ fra-1+", "hi": "ams-1+ ams-2+ fra-1+", "aud": "ams-1+ ams-2+ fra-1+"}
PATHWAYS = [
    ("a-pathway-per-site", ALL_HELD, [("ams", {"lo": "ams-1", "hi": "ams-1", "aud": "ams-1"}),
                                      ("fra", {"lo": "fra-1", "hi": "fra-1", "aud": "fra-1"})]),
    # the lab's master playlist: fill placed 240p and 480p on a2, 720p on a1. The pathway is the site's,
    # named after it; each file comes from the site's holder.
    ("files-placed-one-by-one", {"lo": "ams-2+ ams-1- fra-1+", "hi": "ams-1+ ams-2- fra-1+",
                                 "aud": "ams-1+ ams-2+ fra-1+"},
     [("ams", {"lo": "ams-2", "hi": "ams-1", "aud": "ams-1"}), ("fra", {"lo": "fra-1", "hi": "fra-1", "aud": "fra-1"})]),
    # a stale inventory's order: within the site the holder still comes first
    ("holder-before-non-holder-in-a-site", {"lo": "ams-1- ams-2+ fra-1+", "hi": "ams-1+ fra-1+", "aud": "ams-1+ fra-1+"},
     [("ams", {"lo": "ams-2", "hi": "ams-1", "aud": "ams-1"}), ("fra", {"lo": "fra-1", "hi": "fra-1", "aud": "fra-1"})]),
    # fra-1 lacks lo: fra's pathway offers hi alone rather than a 404
    ("known-404-left-out", {"lo": "ams-1+ fra-1-", "hi": "ams-1+ fra-1+", "aud": "ams-1+ fra-1+"},
     [("ams", {"lo": "ams-1", "hi": "ams-1", "aud": "ams-1"}), ("fra", {"hi": "fra-1", "aud": "fra-1"})]),
    # steering put fra first, but fra's audio is on an appliance that lacks it: the all-holder pathway wins
    ("holders-first-across-pathways", {"lo": "fra-1+ ams-1+", "hi": "fra-1+ ams-1+", "aud": "fra-1- ams-1+"},
     [("ams", {"lo": "ams-1", "hi": "ams-1", "aud": "ams-1"}), ("fra", {"lo": "fra-1", "hi": "fra-1", "aud": "fra-1"})]),
    ("steering-order-between-equals", {"lo": "fra-1+ ams-1+", "hi": "fra-1+ ams-1+", "aud": "fra-1+ ams-1+"},
     [("fra", {"lo": "fra-1", "hi": "fra-1", "aud": "fra-1"}), ("ams", {"lo": "ams-1", "hi": "ams-1", "aud": "ams-1"})]),
    ("a-site-without-audio-has-no-pathway", {"lo": "ams-1+ fra-1+", "hi": "ams-1+ fra-1+", "aud": "ams-1+"},
     [("ams", {"lo": "ams-1", "hi": "ams-1", "aud": "ams-1"})]),
    ("steering-said-nothing-of-holdings", {"lo": "ams-1 fra-1", "hi": "ams-2 fra-1", "aud": "ams-1 fra-1"},
     [("ams", {"lo": "ams-1", "hi": "ams-2", "aud": "ams-1"}), ("fra", {"lo": "fra-1", "hi": "fra-1", "aud": "fra-1"})]),
    ("more-renditions-first", {"lo": "fra-1+ ams-1+", "hi": "ams-1+", "aud": "fra-1+ ams-1+"},
     [("ams", {"lo": "ams-1", "hi": "ams-1", "aud": "ams-1"}), ("fra", {"lo": "fra-1", "aud": "fra-1"})]),
    ("capped", {n: "ams-1+ fra-1+ lon-1+" for n in KEY}, [("ams", {n: "ams-1" for n in KEY}),
                                                          ("fra", {n: "fra-1" for n in KEY})]),
]


@pytest.mark.parametrize("spec,want", [c[1:] for c in PATHWAYS], ids=[c[0] for c in PATHWAYS])
def test_one_pathway_per_site_holders_first(spec, want):
    locations, holds = answer(spec)
    paths = build_pathways(ENTRY, locations, WHERE, max_pathways=2, holds=holds)
    got = [(p.id, {name: p.appliances[key] for name, key in KEY.items() if key in p.urls}) for p in paths]
    assert got == want
    for p in paths:  # the label names where the bytes come from: every URL on an appliance of that site
        assert p.site == p.id and all(WHERE(u.origin).site == p.site for u in p.urls.values())
        assert {WHERE(u.origin).appliance for u in p.urls.values()} == p.hosts


def test_a_second_pathway_with_the_same_appliances_is_not_emitted():
    """An appliance the fleet file lists twice (two base URLs, two sites): its second pathway would
    carry the very same appliances, so it is not emitted."""
    def where(origin: str) -> Where:
        return {"http://a:80": Where("oca-a", "old"), "http://a-alias:80": Where("oca-a", "new"),
                "http://b:80": Where("oca-b", "b")}[origin]
    locations = {k: [f"http://a:80/{k}{SIG}", f"http://a-alias:80/{k}{SIG}", f"http://b:80/{k}{SIG}"]
                 for k in KEY.values()}
    assert [p.id for p in build_pathways(ENTRY, locations, where, max_pathways=4)] == ["old", "b"]


def test_without_the_fleet_each_appliance_is_its_own_pathway():
    locations, holds = answer(ALL_HELD)
    paths = build_pathways(ENTRY, locations, where_in({}), max_pathways=4, holds=holds)
    assert [p.id for p in paths] == ["ams-1_80", "ams-2_80", "fra-1_80"]


def test_hls_master_carries_pathways_stable_ids_and_the_encoded_audio():
    locations, holds = answer({"lo": "ams-1+ fra-1-", "hi": "ams-1+ fra-1+", "aud": "ams-1+ fra-1+"})
    paths = build_pathways(ENTRY, locations, WHERE, holds=holds)
    text = manifests.hls_master(ENTRY, paths, "/s.json")
    infs = [line for line in text.splitlines() if line.startswith("#EXT-X-STREAM-INF")]
    assert [(re.search(r'PATHWAY-ID="([^"]+)"', i)[1], re.search(r'STABLE-VARIANT-ID="([^"]+)"', i)[1]) for i in infs] \
        == [("ams", "lo"), ("ams", "hi"), ("fra", "hi")]
    media = [line for line in text.splitlines() if line.startswith("#EXT-X-MEDIA")]
    assert len(media) == 2 and all('STABLE-RENDITION-ID="aud"' in m and 'CHANNELS="1"' in m for m in media)
    assert ['GROUP-ID="audio-0"' in media[0], 'GROUP-ID="audio-1"' in media[1]] == [True, True]
    uris = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert [u.split("?loc=http://")[1].split(":")[0] for u in uris] == ["ams-1", "ams-1", "fra-1"]


def test_mpd_lists_holders_base_urls_first():
    locations, holds = answer({"lo": "fra-1+ ams-1+", "hi": "fra-1+ ams-1+", "aud": "fra-1- ams-1+"})
    paths = build_pathways(ENTRY, locations, WHERE, holds=holds)
    assert [p.id for p in paths] == ["ams", "fra"]
    root = ET.fromstring(manifests.dash_mpd(ENTRY, paths, "/s.json?dash=1"))
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    order = {rep.get("id"): [b.get("serviceLocation") for b in rep.findall("d:BaseURL", ns)]
             for rep in root.iter("{urn:mpeg:dash:schema:mpd:2011}Representation")}
    assert order == {"lo": ["ams", "fra"], "hi": ["ams", "fra"], "aud": ["ams", "fra"]}


# ---- the steering manifest --------------------------------------------------------------------------

NOW = 1_767_225_600.0


def fleet_state(**overrides):
    """Every appliance up and quiet; overrides: appliance=("down"|"draining"|"busy")."""
    out = {}
    for site in FLEET["sites"]:
        for a in site["appliances"]:
            how = overrides.get(a["id"].replace("-", "_"), "up")
            out[a["id"]] = steer.ApplianceState(how in ("up", "busy"), how == "busy", site["id"])
    return out


SESSION = "ams:ams-1~ams-2,fra:fra-1"
DECISIONS = [
    ("all-good", {}, {}, {}, ["ams", "fra"], {}, False),
    ("drained-appliance-left-out", {"ams_2": "draining"}, {}, {}, ["fra"], {}, True),
    ("drained-but-a-clone-covers-the-site", {"ams_2": "draining"}, {"pathways": SESSION + ",ams.2:ams-1"}, {},
     ["fra", "ams.2"], {}, False),
    ("saturated-last", {"ams_1": "busy"}, {}, {}, ["fra", "ams"], {}, False),
    ("player-left-the-first", {}, {"last": "ams"}, {"_HLS_pathway": "fra", "_HLS_throughput": "5000000"},
     ["fra", "ams"], {"ams": NOW + 300}, False),
    ("player-stayed", {}, {"last": "ams"}, {"_HLS_pathway": "ams", "_HLS_throughput": "5000000"},
     ["ams", "fra"], {}, False),
    ("too-slow-for-the-lowest-variant", {}, {"last": "ams"}, {"_HLS_pathway": "ams", "_HLS_throughput": "100000"},
     ["fra", "ams"], {"ams": NOW + 300}, False),
    ("hls-default-estimate-is-no-evidence", {}, {"last": "ams"}, {"_HLS_pathway": "ams", "_HLS_throughput": "500000"},
     ["ams", "fra"], {}, False),
    ("too-slow-but-nowhere-else", {}, {"pathways": "ams:ams-1", "last": "ams"},
     {"_HLS_pathway": "ams", "_HLS_throughput": "100000"}, ["ams"], {}, False),
    ("penalty-carried", {}, {"pen": f"ams:{int(NOW) + 60}", "last": "fra"}, {"_HLS_pathway": "fra"},
     ["fra", "ams"], {"ams": NOW + 60}, False),
    ("penalty-expired", {}, {"pen": f"ams:{int(NOW) - 1}", "last": "fra"}, {"_HLS_pathway": "fra"},
     ["ams", "fra"], {}, False),
    ("dash-hints", {}, {"last": "ams", "dash": "1"}, {"_DASH_pathway": "fra", "_DASH_throughput": "5000000"},
     ["fra", "ams"], {"ams": NOW + 300}, False),
    ("nothing-usable", {"ams_1": "down", "ams_2": "down", "fra_1": "down", "fra_2": "down", "lon_1": "down"}, {}, {},
     ["ams", "fra"], {}, False),
    ("home-site-came-up", {}, {"pathways": "fra:fra-1", "home": "ams"}, {}, ["fra"], {}, True),
    ("resteered-recently", {"ams_2": "draining"}, {"rs": str(int(NOW) - 10)}, {}, ["fra"], {}, False),
    ("resteered-long-ago", {"ams_2": "draining"}, {"rs": str(int(NOW) - 31)}, {}, ["fra"], {}, True),
]


@pytest.mark.parametrize("states,session,hints,priority,penalties,resteer", [c[1:] for c in DECISIONS],
                         ids=[c[0] for c in DECISIONS])
def test_steering_decision(states, session, hints, priority, penalties, resteer):
    query = {"pathways": SESSION, **session, **hints}
    dash = query.get("dash") == "1"
    verdict = steer.decide(steer.parse_session(query), fleet_state(**states), steer.parse_hints(query, dash), NOW,
                           min_bandwidth_bps=600_000, resteer=not dash)
    assert (list(verdict.priority), dict(verdict.penalties), verdict.resteer) == (priority, penalties, resteer)


@pytest.mark.parametrize("query,error", [
    ({"pathways": "ams:ams-1~ams-2,fra:fra-1", "home": "ams", "last": "fra", "pen": "ams:1767225900", "rs": "1"}, None),
    ({"pathways": "a,b"}, None),  # a session from before pathways per site: one appliance each
    ({"pathways": "ams:"}, "pathways"), ({"pathways": "ams:a b"}, "pathways"), ({"pathways": "a,a"}, "pathways"),
    ({"pathways": "ams:" + "~".join(f"a{i}" for i in range(9))}, "pathways"),
    ({"pathways": "a", "last": "b"}, "last"), ({"pathways": "a", "pen": "b:1"}, "pen"),
    ({"pathways": "a", "pen": "a:soon"}, "pen"), ({"pathways": "a", "rs": "-1"}, "rs"),
    ({"pathways": "a", "home": 'x"'}, "home"),
], ids=["full", "legacy", "no-hosts", "space", "twice", "too-many-hosts", "last", "pen-unknown", "pen-time", "rs",
        "home"])
def test_the_session_round_trips_or_is_refused(query, error):
    if error is not None:
        with pytest.raises(manifests.PlaybackError, match=f"^{error}: "):
            steer.parse_session(query)
        return
    session = steer.parse_session(query)
    assert steer.parse_session(dict(steer.session_query(session))) == session
    uri = manifests.steering_uri("t1", session, dash=False)
    assert uri.text.startswith("/v1/playback/t1/steering.json?pathways=")


def test_hints_that_do_not_parse_are_ignored():
    assert steer.parse_hints({"_HLS_pathway": 'a"', "_HLS_throughput": "fast"}, dash=False) == steer.Hints()
    assert steer.parse_hints({"_HLS_pathway": "a", "_HLS_throughput": "12"}, dash=True) == steer.Hints()
    assert steer.parse_hints({"_HLS_pathway": "a", "_HLS_throughput": "12"}, dash=False) == steer.Hints("a", 12)


def test_clones_offer_what_is_new_under_new_ids():
    """ams-2 drained mid-session: steering's fresh answer gives ams on ams-1 alone (new appliances: a
    clone `ams.2`), fra as before (same appliances: not offered again), lon (new site, but only two of
    three renditions: a clone would keep its base's URIs for the third, so it is not offered)."""
    session = steer.parse_session({"pathways": SESSION, "home": "ams"})
    states = fleet_state(ams_2="draining")
    locations, holds = answer({"lo": "ams-1+ fra-1+ lon-1+", "hi": "ams-1+ fra-1+", "aud": "ams-1+ fra-1+ lon-1+"})
    fresh = build_pathways(ENTRY, locations, WHERE, max_pathways=4, holds=holds)
    added = steer.new_pathways(session, fresh, states, len(ENTRY.renditions))
    assert [(p.id, sorted(p.hosts)) for p in added] == [("ams.2", ["ams-1"])]
    grown = steer.grown(session, fresh, added, NOW)
    assert grown.ids == ["ams.2", "fra", "ams"] and grown.resteered_at == NOW
    verdict = steer.decide(grown, states, steer.Hints(), NOW)
    assert list(verdict.priority) == ["ams.2", "fra"] and not verdict.resteer
    base = manifests.steering_uri("t1", grown, False, "https://play.example.net")
    clone = manifests.pathway_clone(ENTRY, added[0], "ams", base)
    assert clone["BASE-ID"] == "ams" and clone["ID"] == "ams.2"
    variants, renditions = clone["URI-REPLACEMENT"]["PER-VARIANT-URIS"], clone["URI-REPLACEMENT"]["PER-RENDITION-URIS"]
    assert set(variants) == {"lo", "hi"} and set(renditions) == {"aud"}
    for name, uri in {**variants, **renditions}.items():  # absolute: hls.js takes them as they are
        assert uri.startswith(f"https://play.example.net/v1/playback/t1/{name}.m3u8?loc=http://ams-1:80/")
    body = steer.steering_manifest(verdict.priority, 10, base.text, dash=False, clones=[clone])
    assert body["PATHWAY-CLONES"] == [clone] and "PATHWAY-CLONES" not in steer.steering_manifest(
        verdict.priority, 10, base.text, dash=True, clones=[clone])
    # asked again later with the same answer: nothing new to offer
    assert steer.new_pathways(grown, fresh, states, len(ENTRY.renditions)) == []
