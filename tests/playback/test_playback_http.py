"""Playback's HTTP API against the real stack (origin dir, steering, two appliances, `playback serve`):
catalog, manifests with signed appliance URLs bound to the connection's client, content steering,
events and popularity, the fleet view, bad input, a steering outage, check-config and SIGTERM."""
from __future__ import annotations

import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from playback_testkit import TITLE, PlaybackProcess, playback_toml
from tests.steering.steer_helpers import free_port

M3U8 = "application/vnd.apple.mpegurl"


def get(stack, path, **kw):
    return requests.get(stack.playback.url + path, timeout=10, **kw)


def test_catalog_list_search_detail_and_poster(stack):
    body = get(stack, "/v1/titles").json()
    assert body["count"] == 1 and body["titles"][0]["id"] == TITLE
    assert get(stack, "/v1/titles", params={"q": "sampl"}).json()["count"] == 1
    assert get(stack, "/v1/titles", params={"q": "nothing-like-it"}).json()["count"] == 0
    assert get(stack, "/v1/titles", params={"genre": "animation"}).json()["count"] == 1
    detail = get(stack, f"/v1/titles/{TITLE}").json()
    assert detail["title"] == "Sample Title" and len(detail["renditions"]) == 3
    assert detail["renditions"][0]["segments"] and detail["releaseDate"] == "2024-05-01"
    poster = get(stack, detail["posterUrl"])
    assert poster.status_code == 200 and poster.content[:2] == b"\xff\xd8"


def test_unknown_title_is_404_everywhere(stack):
    for path in ("/v1/titles/nope", "/v1/titles/nope/poster", "/v1/playback/nope/master.m3u8",
                 "/v1/playback/nope/manifest.mpd", "/v1/playback/nope/144p.m3u8",
                 "/v1/playback/nope/steering.json?pathways=a", "/v1/titles/..%2F..%2Fetc"):
        r = get(stack, path)
        assert r.status_code == 404, (path, r.status_code, r.text)


def variants(text):
    lines = text.splitlines()
    return [(lines[i], lines[i + 1]) for i, line in enumerate(lines) if line.startswith("#EXT-X-STREAM-INF")]


def test_master_media_playlists_point_at_steered_appliances_for_this_client(stack):
    r = get(stack, f"/v1/playback/{TITLE}/master.m3u8", headers={"X-Forwarded-For": "192.0.2.10"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith(M3U8)
    assert "no-store" in r.headers["Cache-Control"]
    found = variants(r.text)
    assert {re.search(r'PATHWAY-ID="([^"]+)"', inf)[1] for inf, _ in found} == {"ams", "fra"}  # one per site
    assert "#EXT-X-CONTENT-STEERING" in r.text
    inf, uri = found[0]
    loc = unquote(parse_qs(urlsplit(uri).query)["loc"][0])
    assert urlsplit(loc).port == stack.ports["ams-1"]  # the default site first
    # untrusted peer: X-Forwarded-For ignored, the token is bound to the connection's /24
    assert parse_qs(urlsplit(loc).query)["c"] == ["127.0.0.0/24"]
    expires = int(parse_qs(urlsplit(loc).query)["e"][0])
    assert expires - time.time() > stack.entry["duration"] + 3000
    media = get(stack, f"/v1/playback/{TITLE}/{uri}")
    assert media.status_code == 200 and "#EXT-X-BYTERANGE:" in media.text and "#EXT-X-ENDLIST" in media.text
    seg = [line for line in media.text.splitlines() if line.startswith("http")][1]
    rng = [line for line in media.text.splitlines() if line.startswith("#EXT-X-BYTERANGE:")][0].split(":")[1]
    length, offset = (int(x) for x in rng.split("@"))
    got = requests.get(seg, headers={"Range": f"bytes={offset}-{offset + length - 1}"}, timeout=5)
    key = urlsplit(seg).path.lstrip("/")
    assert got.status_code == 206 and got.content == (stack.folder / "origin" / key).read_bytes()[offset:offset + length]


def test_media_playlist_refuses_foreign_or_unsigned_locations(stack):
    video = next(r for r in stack.entry["renditions"] if r["type"] == "video")
    for loc in (f"http://evil.example/{video['key']}?e=1&k=k1&c=x&s=y",
                f"http://127.0.0.1:{stack.ports['ams-1']}/{video['key']}", ""):
        r = get(stack, f"/v1/playback/{TITLE}/{video['name']}.m3u8", params={"loc": loc})
        assert r.status_code == 400 and r.json()["error"] == "bad-location"
    assert get(stack, f"/v1/playback/{TITLE}/nope.m3u8", params={"loc": "x"}).status_code == 404


def test_dash_manifest_lists_every_site_per_representation(stack):
    r = get(stack, f"/v1/playback/{TITLE}/manifest.mpd")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/dash+xml")
    ns = "{urn:mpeg:dash:schema:mpd:2011}"
    root = ET.fromstring(r.content)
    assert root.find(f"{ns}ContentSteering").get("defaultServiceLocation") == "ams"
    reps = list(root.iter(f"{ns}Representation"))
    assert len(reps) == 3
    for rep in reps:
        bases = rep.findall(f"{ns}BaseURL")
        assert [b.get("serviceLocation") for b in bases] == ["ams", "fra"]  # a pathway per site
        assert [urlsplit(b.text).port for b in bases] == [stack.ports["ams-1"], stack.ports["fra-1"]]


PAGE = "http://player.example.test:8080"  # a player page on another origin


@pytest.mark.parametrize("path", [f"/v1/playback/{TITLE}/master.m3u8", f"/v1/playback/{TITLE}/manifest.mpd",
                                  f"/v1/playback/{TITLE}/steering.json?pathways=ams-1", "/v1/titles",
                                  f"/v1/titles/{TITLE}", "/v1/fleet", "/v1/playback/nope/master.m3u8"])
def test_player_routes_answer_other_origins(stack, path):
    r = requests.get(stack.playback.url + path, headers={"Origin": PAGE}, timeout=10)
    assert r.headers.get("Access-Control-Allow-Origin") == "*", (r.status_code, dict(r.headers))
    assert "X-Request-Id" in r.headers.get("Access-Control-Expose-Headers", "")
    assert "Access-Control-Allow-Credentials" not in r.headers  # nothing here uses cookies


def test_preflight_for_events_and_no_cors_on_the_control_plane(stack):
    pre = requests.options(stack.playback.url + "/v1/events", timeout=10, headers={
        "Origin": PAGE, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    assert pre.status_code == 204 and pre.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    assert "content-type" in pre.headers["Access-Control-Allow-Headers"].lower()
    bad = requests.options(stack.playback.url + "/v1/events", timeout=10,
                           headers={"Origin": PAGE, "Access-Control-Request-Method": "DELETE"})
    assert bad.status_code == 403 and "Access-Control-Allow-Origin" not in bad.headers
    for path in ("/v1/demand", "/metrics"):
        r = requests.get(stack.playback.url + path, headers={"Origin": PAGE}, timeout=10)
        assert "Access-Control-Allow-Origin" not in r.headers


@pytest.mark.parametrize("allowed, origin, grant", [
    (("*",), PAGE, "*"), ((PAGE,), PAGE, PAGE), ((PAGE,), "http://other.test", None), ((), PAGE, None),
    (("*",), None, None),
], ids=["any", "listed", "not-listed", "cors-off", "same-origin"])
def test_cors_verdicts(allowed, origin, grant):
    from playback.core import cors
    assert cors.allowed_origin(origin, allowed) == grant
    status, headers = cors.preflight(origin, "GET", allowed)
    assert (status == 204) == (grant is not None)
    if grant not in (None, "*"):
        assert headers["Vary"] == "Origin"


def test_steering_manifest_follows_live_state(stack):
    body = get(stack, f"/v1/playback/{TITLE}/steering.json", params={"pathways": "fra-1,ams-1,ghost"}).json()
    assert body["VERSION"] == 1 and body["TTL"] == 1 and body["PATHWAY-PRIORITY"] == ["fra-1", "ams-1"]
    # absolute: dash.js does not resolve a relative steering URI against the MPD's
    assert body["RELOAD-URI"].startswith(f"{stack.playback.url}/v1/playback/{TITLE}/steering.json?pathways=")
    dash = get(stack, f"/v1/playback/{TITLE}/steering.json", params={"pathways": "ams-1", "dash": "1"}).json()
    # dash.js reads PATHWAY-PRIORITY; the DASH-IF spec names it SERVICE-LOCATION-PRIORITY: both, the same
    assert dash["PATHWAY-PRIORITY"] == dash["SERVICE-LOCATION-PRIORITY"] == ["ams-1"]
    mpd = get(stack, f"/v1/playback/{TITLE}/manifest.mpd").text
    assert f">{stack.playback.url}/v1/playback/{TITLE}/steering.json?pathways=" in mpd
    assert get(stack, f"/v1/playback/{TITLE}/steering.json", params={"pathways": "a b"}).status_code == 400


def test_pathways_name_their_site_and_steering_heeds_the_player(stack):
    """The real stack (one appliance per site): a pathway per site whose every URL is on that site,
    stable ids for clones, the audio declared as encoded; the player's report penalises the pathway it
    left; a pathway whose appliance is gone from a site that has a live one is replaced by a clone."""
    site_of_port = {port: name.split("-")[0] for name, port in stack.ports.items()}
    master = get(stack, f"/v1/playback/{TITLE}/master.m3u8").text
    for inf, uri in variants(master):
        pathway = re.search(r'PATHWAY-ID="([^"]+)"', inf)[1]
        loc = unquote(parse_qs(urlsplit(uri).query)["loc"][0])
        assert site_of_port[urlsplit(loc).port] == pathway, (pathway, loc)
        assert re.search(r'STABLE-VARIANT-ID="[A-Za-z0-9._-]+"', inf)
    (audio,) = [r for r in stack.entry["renditions"] if r["type"] == "audio"]
    media = [line for line in master.splitlines() if line.startswith("#EXT-X-MEDIA")]
    assert len(media) == 2 and all(f'CHANNELS="{audio["channels"]}"' in m and "STABLE-RENDITION-ID=" in m
                                   for m in media)
    url = f"/v1/playback/{TITLE}/steering.json"
    left = get(stack, url, params={"pathways": "ams:ams-1,fra:fra-1", "last": "ams", "_HLS_pathway": "fra",
                                   "_HLS_throughput": "4000000"}).json()
    assert left["PATHWAY-PRIORITY"] == ["fra", "ams"]  # it failed the player there: last, for 300 s
    assert re.search(r"[?&]pen=ams:[0-9]+(&|$)", left["RELOAD-URI"]) and "&last=fra" in left["RELOAD-URI"]
    again = get(stack, left["RELOAD-URI"].replace(stack.playback.url, ""), params={"_HLS_pathway": "fra"}).json()
    assert again["PATHWAY-PRIORITY"] == ["fra", "ams"] and "pen=ams:" in again["RELOAD-URI"]
    # fra's pathway used an appliance that is gone (fra-9); fra-1 is live: steering is asked again and
    # fra on fra-1 alone comes back as a clone, with absolute media URIs on playback for this client
    body = get(stack, url, params={"pathways": "ams:ams-1,fra:fra-1~fra-9"}).json()
    (clone,) = body["PATHWAY-CLONES"]
    assert clone["ID"] == "fra.2" and clone["BASE-ID"] == "ams" and body["PATHWAY-PRIORITY"][:2] == ["ams", "fra.2"]
    assert "fra.2:fra-1" in body["RELOAD-URI"] and "&rs=" in body["RELOAD-URI"]
    uris = {**clone["URI-REPLACEMENT"]["PER-VARIANT-URIS"], **clone["URI-REPLACEMENT"]["PER-RENDITION-URIS"]}
    assert set(uris) == {r["name"] for r in stack.entry["renditions"]}
    playlist = requests.get(uris[audio["name"]], timeout=10)
    assert playlist.status_code == 200 and uris[audio["name"]].startswith(stack.playback.url)
    segment = next(line for line in playlist.text.splitlines() if line.startswith("http"))
    assert urlsplit(segment).port == stack.ports["fra-1"]
    assert requests.get(segment, headers={"Range": "bytes=0-99"}, timeout=10).status_code == 206
    # the reload after: the clone is in the session, nothing new to offer
    after = get(stack, body["RELOAD-URI"].replace(stack.playback.url, "")).json()
    assert "PATHWAY-CLONES" not in after and after["PATHWAY-PRIORITY"][:2] == ["ams", "fra.2"]


def test_events_feed_popularity_and_bad_ones_store_nothing(stack):
    before = get(stack, "/v1/popularity").json()
    now_ms = time.time() * 1000
    ev = {"userId": "u-http", "videoId": TITLE, "event": "play", "timestamp": now_ms, "position": 0}
    for bad in ([ev, {**ev, "event": "rewind"}], {**ev, "videoId": "nope"}, {**ev, "position": "x"}, "[]", "{"):
        r = requests.post(stack.playback.url + "/v1/events", timeout=5,
                          **({"data": bad} if isinstance(bad, str) else {"json": bad}))
        assert r.status_code == 400, r.text
    assert get(stack, "/v1/popularity").json()["events_accepted"] == before["events_accepted"]
    r = requests.post(stack.playback.url + "/v1/events", timeout=5, json={"events": [
        ev, {**ev, "event": "progress", "position": 4, "timestamp": now_ms + 4000},
        {**ev, "event": "stop", "position": 6, "timestamp": now_ms + 6000}]})
    assert r.status_code == 202 and r.json() == {"accepted": 3}
    after = get(stack, "/v1/popularity").json()
    assert after["events_accepted"] == before["events_accepted"] + 3
    assert after["titles"][TITLE]["plays"] > before.get("titles", {}).get(TITLE, {}).get("plays", 0)
    assert after["titles"][TITLE]["bytes"] > 0 and all(len(v) == 2 for v in after["files"].values())


def test_fleet_health_and_metrics(stack):
    fleet = get(stack, "/v1/fleet").json()
    assert {a["id"] for s in fleet["sites"] for a in s["appliances"]} == {"ams-1", "fra-1"}
    assert fleet["catalog"] == {"titles": 1, "files": 3}
    assert get(stack, "/healthz").json()["status"] == "ok"
    scraped = get(stack, "/metrics")
    assert scraped.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = scraped.text
    assert "playback_steering_calls_total" in text and "playback_plays_total" in text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}  # the whole exposition parses
    assert samples[("playback_plays_total", ())] >= 1 and samples[("playback_steering_calls_total", ())] >= 1
    assert samples[("playback_errors_total", (("reason", "not-found"),))] >= 1  # the 404s above
    assert samples[("playback_draining", ())] == 0 and samples[("playback_uptime_seconds", ())] > 0
    assert ("playback_connections_open", ()) in samples  # the guard's, after the registry's
    assert "hls.js" in get(stack, "/static/vendor/README.md").text
    assert get(stack, "/static/vendor/hls.min.js").status_code == 200
    for page in ("/", f"/play/{TITLE}", "/fleet"):
        assert "<html" in get(stack, page).text


def test_steering_unreachable_is_a_clear_503_with_retry_after(stack, tmp_path):
    config = tmp_path / "playback.toml"
    config.write_text(playback_toml(stack.folder / "origin", [f"http://127.0.0.1:{free_port()}"]))
    down = PlaybackProcess(config)
    try:
        for path in (f"/v1/playback/{TITLE}/master.m3u8", f"/v1/playback/{TITLE}/manifest.mpd"):
            r = requests.get(down.url + path, timeout=10)
            assert r.status_code == 503 and r.headers["Retry-After"] == "5"
            assert r.json()["error"] == "steering-unavailable" and "http" not in r.text.split('"detail"')[0]
        # the catalog still works without steering
        assert requests.get(down.url + "/v1/titles", timeout=10).json()["count"] == 1
    finally:
        assert down.stop() == 0


def test_check_config_and_sigterm(stack, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "playback.cli", "check-config", "-c", str(stack.playback.config)],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and "ok:" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[playback]\nsteering_urls = []\n[origin]\nlocation = "/x"\n')
    out = subprocess.run([sys.executable, "-m", "playback.cli", "check-config", "-c", str(bad)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "playback.steering_urls" in out.stderr


def test_a_killed_steering_replica_is_skipped_for_the_next(stack, tmp_path):
    """Replicas are independent: with the first one killed (SIGKILL, a real process), playback
    answers from the next one in its list."""
    import shutil
    import signal as _signal

    from tests.steering.steer_helpers import SteeringProcess

    replica_dir = tmp_path / "replica"
    shutil.copytree(stack.folder / "steering", replica_dir)
    doomed = SteeringProcess(replica_dir / "steering.toml")
    doomed.proc.send_signal(_signal.SIGKILL)
    doomed.proc.wait(5)
    config = tmp_path / "playback.toml"
    config.write_text(playback_toml(stack.folder / "origin", [doomed.url, stack.steering.url]))
    pb = PlaybackProcess(config)
    try:
        r = requests.get(pb.url + f"/v1/playback/{TITLE}/master.m3u8", timeout=10)
        assert r.status_code == 200 and "#EXT-X-STREAM-INF" in r.text
    finally:
        assert pb.stop() == 0
