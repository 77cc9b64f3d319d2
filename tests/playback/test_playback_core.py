"""Table-driven tests of playback's pure core: client address, pathways, manifests, steering manifest,
events and popularity, token lifetime, config errors."""
from __future__ import annotations

import json
import re
import tomllib
import xml.etree.ElementTree as ET

import pytest

from contracts.catalog import from_dict
from playback import config as pconfig
from playback.core import events, manifests, steer
from playback.core.clientip import client_ip, parse_networks

TRUSTED = parse_networks(["10.0.0.0/8", "::1/128"])


@pytest.mark.parametrize("peer,xff,want", [
    ("192.0.2.7", None, "192.0.2.7"),
    ("192.0.2.7", "198.51.100.1", "192.0.2.7"),  # untrusted peer: its header is ignored
    ("10.1.2.3", "198.51.100.1", "198.51.100.1"),
    ("10.1.2.3", "6.6.6.6, 198.51.100.1, 10.9.9.9", "198.51.100.1"),  # rightmost untrusted hop
    ("10.1.2.3", "10.2.2.2", "10.2.2.2"),
    ("10.1.2.3", "garbage", None),
    ("::1", "2001:db8::5", "2001:db8::5"),
    ("::ffff:192.0.2.9", None, "192.0.2.9"),
    (None, None, None),
], ids=["plain", "untrusted-xff", "trusted", "chain", "all-trusted", "garbage", "v6", "mapped", "none"])
def test_client_ip(peer, xff, want):
    assert client_ip(peer, xff, TRUSTED) == want


def rendition(name, kind, key, bw):
    r = {"name": name, "type": kind, "key": key, "size": 1000, "xxh3": "0" * 32, "codec": "avc1.42c00c" if kind == "video"
         else "mp4a.40.2", "bandwidth": bw, "averageBandwidth": bw, "duration": 4.0,
         "init": {"offset": 0, "length": 10}, "index": {"offset": 10, "length": 5},
         "segments": [[15, 500, 2.0], [515, 485, 2.0]], "playlist": key.replace(".mp4", ".m3u8")}
    r.update({"width": 320, "height": 180, "frameRate": 24.0} if kind == "video" else
             {"language": "en", "channels": 2, "sampleRate": 48000})
    return r


ENTRY = from_dict({"schema": 1, "id": "t1", "title": "T One", "genres": ["x"], "languages": ["en"], "releaseDate": None,
                   "duration": 4.0, "version": "v1", "master": "m", "dash": "d", "poster": None, "assets": [],
                   "source": {}, "ingestedAt": "", "renditions": [
                       rendition("lo", "video", "f/t1/lo.mp4", 100_000), rendition("hi", "video", "f/t1/hi.mp4", 300_000),
                       rendition("aud", "audio", "f/t1/aud.mp4", 64_000)]})
SIG = "?e=9&k=k1&c=127.0.0.0/24&s=abc"  # as steering writes it (contracts.token)
NAMES = {"http://a:1": "oca-a", "http://b:1": "oca-b", "http://c:1": "oca-c"}


def locs(order):
    return {r.key: [f"{b}/{r.key}{SIG}" for b in order] for r in ENTRY.renditions}


def test_pathways_follow_rank_and_skip_incomplete_appliances():
    located = locs(["http://a:1", "http://b:1"])
    located["f/t1/aud.mp4"] = [f"http://b:1/f/t1/aud.mp4{SIG}"]  # a lacks audio: no pathway for it
    paths = manifests.build_pathways(ENTRY, located, NAMES.__getitem__)
    assert [p.id for p in paths] == ["oca-b"]
    assert [p.id for p in manifests.build_pathways(ENTRY, locs(["http://b:1", "http://a:1"]), NAMES.__getitem__)] \
        == ["oca-b", "oca-a"]


def test_no_location_is_a_503_not_a_manifest():
    located = locs(["http://a:1"])
    located["f/t1/hi.mp4"] = []
    with pytest.raises(manifests.NoLocations) as err:
        manifests.build_pathways(ENTRY, located, NAMES.__getitem__)
    assert err.value.status_hint == 503


def test_hls_master_repeats_variants_per_pathway_with_steering():
    paths = manifests.build_pathways(ENTRY, locs(["http://a:1", "http://b:1"]), NAMES.__getitem__)
    text = manifests.hls_master(ENTRY, paths, "/steer.json?pathways=oca-a,oca-b")
    assert '#EXT-X-CONTENT-STEERING:SERVER-URI="/steer.json?pathways=oca-a,oca-b",PATHWAY-ID="oca-a"' in text
    infs = [line for line in text.splitlines() if line.startswith("#EXT-X-STREAM-INF")]
    assert len(infs) == 4 and sum('PATHWAY-ID="oca-b"' in i and 'AUDIO="audio-1"' in i for i in infs) == 2
    # the signed URL rides re-encoded as a query value: '&' and '=' escaped, '/' ':' '?' as RFC 3986 allows
    assert text.count("TYPE=AUDIO") == 2 and 'URI="aud.m3u8?loc=http://b:1/f/t1/aud.mp4?e%3D9%26k%3Dk1%26' in text


def test_mpd_has_a_base_url_per_pathway_and_content_steering():
    paths = manifests.build_pathways(ENTRY, locs(["http://a:1", "http://b:1"]), NAMES.__getitem__)
    root = ET.fromstring(manifests.dash_mpd(ENTRY, paths, "/s.json?dash=1"))
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    cs = root.find("d:ContentSteering", ns)
    assert cs is not None and cs.get("defaultServiceLocation") == "oca-a" and cs.text == "/s.json?dash=1"
    for rep in root.iter("{urn:mpeg:dash:schema:mpd:2011}Representation"):
        bases = rep.findall("d:BaseURL", ns)
        assert [b.get("serviceLocation") for b in bases] == ["oca-a", "oca-b"]
        assert all(b.text.endswith(SIG.replace("&", "&")) for b in bases)


@pytest.mark.parametrize("loc,ok", [
    (f"http://a:1/f/t1/lo.mp4{SIG}", True),
    (f"http://evil:1/f/t1/lo.mp4{SIG}", False),
    (f"http://a:1/f/t1/hi.mp4{SIG}", False),
    ("http://a:1/f/t1/lo.mp4", False),
    ("javascript:alert(1)", False),
], ids=["ok", "foreign-host", "other-file", "unsigned", "scheme"])
def test_check_location(loc, ok):
    r = ENTRY.video[0]
    if ok:
        assert manifests.check_location(r, loc, list(NAMES)).text == loc
    else:
        with pytest.raises(manifests.BadLocation):
            manifests.check_location(r, loc, list(NAMES))


FLEET = {"sites": [{"id": "s", "appliances": [
    {"id": "a", "base_url": "http://a:1", "status": "up", "accepting": True, "egress_bps": 10, "capacity_bps": 100},
    {"id": "b", "base_url": "http://b:1", "status": "down", "accepting": True},
    {"id": "c", "base_url": "http://c:1", "status": "up", "accepting": True, "egress_bps": 95, "capacity_bps": 100},
    {"id": "d", "base_url": "http://d:1", "status": "up", "accepting": True, "draining": True}]}]}


@pytest.mark.parametrize("session,want", [
    (["a", "b", "c"], ["a", "c"]),
    (["c", "a"], ["a", "c"]),  # saturated goes last
    (["b", "d"], ["b", "d"]),  # nothing usable: the session's own order stands
], ids=["down-dropped", "saturated-last", "none-usable"])
def test_steering_priority(session, want):
    states = steer.fleet_states(FLEET, 0.9)
    verdict = steer.decide(steer.parse_session({"pathways": ",".join(session)}), states, steer.Hints(), 0.0)
    assert list(verdict.priority) == want
    body = steer.steering_manifest(verdict.priority, 10, "/x", dash=False)
    assert body == {"VERSION": 1, "TTL": 10, "RELOAD-URI": "/x", "PATHWAY-PRIORITY": want}
    assert "SERVICE-LOCATION-PRIORITY" in steer.steering_manifest(verdict.priority, 10, "/x", dash=True)


def test_token_outlasts_the_title():
    assert manifests.token_ttl_s(7200, 2.0, 3600, 3600, 172800) == 18000
    assert manifests.token_ttl_s(10, 2.0, 0, 3600, 172800) == 3600
    assert manifests.token_ttl_s(10 ** 6, 2.0, 0, 3600, 172800) == 172800


NOW = 1_700_000_000.0
GOOD = {"userId": "u1", "videoId": "t1", "event": "play", "timestamp": NOW * 1000, "position": 0}


@pytest.mark.parametrize("change,field", [
    ({"userId": ""}, "userId"), ({"videoId": "nope"}, "videoId"), ({"event": "pause"}, "event"),
    ({"timestamp": "now"}, "timestamp"), ({"timestamp": 1}, "timestamp"), ({"position": -1}, "position"),
    ({"position": 99}, "position"), ({"extra": 1}, "extra"), ({"rendition": "aud"}, "rendition"),
    ({"position": float("nan")}, "position"),
], ids=lambda v: str(v) if isinstance(v, str) else None)
def test_malformed_events_are_refused_naming_the_field(change, field):
    with pytest.raises(events.EventError, match=field):
        events.validate({**GOOD, **change}, {"t1": ENTRY}.get, NOW)


def test_a_batch_is_all_or_nothing():
    batch = [GOOD, {**GOOD, "event": "bogus"}]
    with pytest.raises(events.EventError, match=r"events\[1\]\.event"):
        events.validate_batch(batch, {"t1": ENTRY}.get, NOW, 10)


def test_popularity_counts_plays_and_watched_bytes_with_decay():
    pop = events.Popularity(half_life_s=100)
    find = {"t1": ENTRY}.get
    for kind, pos, dt in (("play", 0, 0), ("progress", 2, 2), ("stop", 4, 4)):
        pop.add(events.validate({**GOOD, "event": kind, "position": pos, "timestamp": NOW + dt, "rendition": "hi"},
                                find, NOW), ENTRY, NOW)
    snap = pop.snapshot(NOW)
    assert snap["titles"]["t1"]["plays"] == 1.0
    assert snap["titles"]["t1"]["bytes"] == pytest.approx(4 * (300_000 + 64_000) / 8)
    assert snap["files"]["f/t1/hi.mp4"][1] == pytest.approx(4 * 300_000 / 8) and "f/t1/lo.mp4" not in snap["files"]
    assert pop.snapshot(NOW + 100)["titles"]["t1"]["plays"] == pytest.approx(0.5)
    json.dumps(snap)


BASE = """
[playback]
steering_urls = ["http://127.0.0.1:8100"]
[origin]
location = "/srv/origin"
"""


@pytest.mark.parametrize("extra,where", [
    ('[playback]\nsteering_urls = ["ftp://x"]', "playback.steering_urls"),
    ('[playback]\nsteering_urls = ["http://x"]\ntrusted_proxies = ["nope"]', "playback.trusted_proxies[0]"),
    ('[playback]\nsteering_urls = ["http://x"]\nport = 70000', "playback.port"),
    ('[playback]\nsteering_urls = ["http://x"]\nsteering_tll_s = 3', "playback.steering_tll_s"),
    ('[playback]\nsteering_urls = ["http://x"]\ntoken_min_ttl_s = 9000\ntoken_max_ttl_s = 100', "playback.token_min_ttl_s"),
    ('[playback]\nsteering_urls = ["http://x"]\ncors_allow_origins = ["*", "http://a"]',
     "playback.cors_allow_origins[0]"),
    ('[playback]\nsteering_urls = ["http://x"]\nbody_timeout_s = 0', "playback.body_timeout_s: must be at least 0.1"),
    ('[playback]\nsteering_urls = ["http://x"]\n[demand]\nregion = "a b"', "demand.region: must be 1-64"),
    ('[playback]\nsteering_urls = ["http://x"]\n[tls]\ncert_file = "/c.pem"', "tls.key_file: required"),
], ids=["url", "proxy", "port", "typo", "ttl", "cors", "guard", "region", "tls-key"])
def test_config_errors_name_the_key(extra, where):
    text = extra + '\n[origin]\nlocation = "/srv/origin"\n'
    with pytest.raises(pconfig.ConfigError, match="^" + re.escape(where)):
        pconfig.parse(tomllib.loads(text))


def test_example_config_parses():
    from pathlib import Path
    cfg = pconfig.load(Path(__file__).resolve().parents[2] / "config/playback.example.toml")
    assert cfg.steering_urls == ("http://steering-1.example.net:8100", "http://steering-2.example.net:8100")
    assert cfg.port == 8090
    assert pconfig.parse(tomllib.loads(BASE)).trusted_proxies == ()
