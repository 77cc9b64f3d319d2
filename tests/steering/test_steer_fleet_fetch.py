"""The fleet polled from a URL (steering.fleetfetch), against a real HTTP server on 127.0.0.1 playing
the Traffic Control side: a coverage-zone file with an ETag. Steering downloads it at first start,
answers 304s with nothing to do, adopts a changed file, keeps the last good fleet (and says why in
/healthz, /metrics and the error) when the source breaks or fails, skips a bad zone without freezing
the rest, and recovers once the source is fixed. Polls are driven by the test (the interval is an
hour), except the last check, which lets the supervised `fleet-fetch` task fail on its own."""
from __future__ import annotations

import asyncio
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web

from tests.support.appthread import AppThread
from steer_helpers import AUTH, ServerThread, heartbeat, wait_until, write_setup
from steering.fleetfetch import FetchFailed, redact
from steering.server import POLLER

FIXTURES = Path(__file__).with_name("czf")


class CzfSource(AppThread):
    """A coverage-zone file over HTTP with a strong ETag and If-None-Match, on 127.0.0.1."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.body = json.dumps(doc).encode()
        self.status = 200
        self.seen: list[tuple[str | None, int]] = []  # (If-None-Match, status answered)
        super().__init__(self._app)

    def serve(self, doc: dict[str, Any] | bytes, status: int = 200) -> None:
        self.body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.status = status

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cdns/cdn1/czf.json"

    async def _handle(self, request: web.Request) -> web.Response:
        given = request.headers.get("If-None-Match")
        etag = '"' + hashlib.sha256(self.body).hexdigest()[:20] + '"'
        if self.status != 200:
            answer = web.Response(status=self.status, text="traffic ops is having a day")
        elif given == etag:
            answer = web.Response(status=304, headers={"ETag": etag})
        else:
            answer = web.Response(body=self.body, content_type="application/json", headers={"ETag": etag})
        self.seen.append((given, answer.status))
        return answer

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/cdns/cdn1/czf.json", self._handle)
        return app


def poll(srv: ServerThread) -> str:
    """One poll on the server's loop, as the `fleet-fetch` task makes them."""
    return asyncio.run_coroutine_threadsafe(srv.app[POLLER].poll(), srv.loop).result(15)


def fleet(srv: ServerThread) -> dict[str, Any]:
    return requests.get(srv.url + "/v1/fleet", headers=AUTH, timeout=5).json()


def health(srv: ServerThread) -> dict[str, Any]:
    r = requests.get(srv.url + "/healthz", timeout=5)
    assert r.status_code == 200  # degraded or not, it still serves its last good fleet
    return r.json()


def site_of(srv: ServerThread, client: str) -> str:
    r = requests.get(srv.url + "/v1/steer", params={"file": "t/a.mp4", "client": client, "explain": 1},
                     headers=AUTH, timeout=5)
    return r.json()["decision"]["site"]


def metric(srv: ServerThread, name: str, **labels: str) -> float:
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in requests.get(srv.url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(want + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture()
def world(tmp_path: Path):
    doc = json.loads((FIXTURES / "traffic_router.json").read_text())
    with CzfSource(doc) as source:
        extra = f'fleet_url = "{source.url}"\nfleet_poll_interval_s = 3600\nfleet_fetch_timeout_s = 5'
        config = write_setup(tmp_path, default_site="cache-group-0", health={"missed_reports": 100}, extra=extra)
        config.write_text(config.read_text().replace('fleet_file = "fleet.toml"', 'fleet_file = "fleet.json"'))
        with ServerThread(config) as srv:  # no fleet.json yet: the first start downloads it
            for appliance in srv.replica.loaded.fleet.appliances.values():
                assert srv.post_heartbeat(heartbeat(appliance.id, appliance.site)).status_code == 200
            yield source, srv, doc, tmp_path / "fleet.json"


def test_polling_follows_changes_and_keeps_the_last_good_fleet(world) -> None:
    source, srv, doc, copy_path = world
    assert copy_path.read_bytes() == source.body  # the first start's download, saved as the last good copy
    assert fleet(srv)["revision"] == "Wed May  4 15:04:01 2016"
    assert fleet(srv)["fleet_source"]["source"].startswith(source.url)

    # unchanged: a conditional GET answered 304
    poll(srv)
    assert poll(srv) == "not-modified"
    given, answered = source.seen[-1]
    assert given and answered == 304  # If-None-Match with the ETag of the copy in service

    # changed: a new revision, a new zone and a moved network, adopted and saved
    v2 = copy.deepcopy(doc)
    v2["revision"] = "r2"
    v2["coverageZones"]["cache-group-4"] = {"network": ["12.34.4.0/24"], "coordinates": {"latitude": "40",
                                            "longitude": "-90"}, "appliances": [{"id": "cg4-1", "capacity_gbps": 10,
                                            "base_url": "http://cg4-1.oca.test:8080"}]}
    v2["coverageZones"]["cache-group-2"]["network"].remove("111.222.2.0/24")
    v2["coverageZones"]["cache-group-3"]["network"].append("111.222.2.0/24")
    source.serve(v2)
    assert poll(srv) == "changed"
    assert fleet(srv)["revision"] == "r2" and copy_path.read_bytes() == source.body
    assert srv.post_heartbeat(heartbeat("cg4-1", "cache-group-4")).status_code == 200  # a new appliance is known
    assert site_of(srv, "12.34.4.9") == "cache-group-4" and site_of(srv, "111.222.2.9") == "cache-group-3"
    assert health(srv)["degraded"] == []
    good_copy = copy_path.read_bytes()

    # broken at the source: the last good fleet stays, and every view says why
    source.serve(source.body[: len(source.body) // 2])
    with pytest.raises(FetchFailed, match="not valid JSON"):
        poll(srv)
    assert fleet(srv)["revision"] == "r2" and copy_path.read_bytes() == good_copy
    assert site_of(srv, "12.34.4.9") == "cache-group-4"
    h = health(srv)
    assert h["status"] == "degraded" and h["degraded"] == ["fleet"]
    assert "keeping the last good fleet" in h["fleet"]["fetch"]["last_error"] and h["fleet"]["revision"] == "r2"
    assert metric(srv, "steering_fleet_fetches_total", result="invalid") == 1
    assert metric(srv, "steering_fleet_fetch_failing") == 1
    # while the source still serves the refused document, a retry is a 304 on its ETag, not a re-parse
    with pytest.raises(FetchFailed, match="still the refused document"):
        poll(srv)
    assert source.seen[-1][1] == 304

    # the source fails outright: same
    source.serve(v2, status=503)
    with pytest.raises(FetchFailed, match="HTTP 503"):
        poll(srv)
    assert metric(srv, "steering_fleet_fetches_total", result="error") == 1 and fleet(srv)["revision"] == "r2"

    # one malformed zone among good ones: the rest moves on, the bad one keeps its last good version
    v3 = copy.deepcopy(v2)
    v3["revision"] = "r3"
    v3["coverageZones"]["cache-group-2"]["coordinates"]["latitude"] = "north"
    v3["coverageZones"]["cache-group-1"]["network"].append("198.51.100.0/24")
    source.serve(v3)
    assert poll(srv) == "changed"
    body = fleet(srv)
    assert body["revision"] == "r3" and len(body["sites"]) == 6
    assert body["fleet_source"]["skipped"] == [
        "coverageZones.cache-group-2.coordinates.latitude: must be a number or a numeric string, not 'north' — "
        "skipped; its last good version stays in service"]
    assert site_of(srv, "198.51.100.7") == "cache-group-1" and site_of(srv, "12.34.2.7") == "cache-group-2"
    h = health(srv)
    assert h["degraded"] == ["fleet"] and h["fleet"]["fetch"]["last_error"] is None
    assert metric(srv, "steering_fleet_zones_skipped") == 1 and metric(srv, "steering_fleet_fetch_failing") == 0

    # fixed: healthy again
    v4 = copy.deepcopy(v3)
    v4["revision"] = "r4"
    v4["coverageZones"]["cache-group-2"]["coordinates"]["latitude"] = "48.0"
    source.serve(v4)
    assert poll(srv) == "changed"
    assert fleet(srv)["revision"] == "r4" and health(srv)["status"] == "ok" and health(srv)["degraded"] == []

    # the supervised task: a broken source makes `fleet-fetch` fail (logged, counted, retried)
    source.serve(b"{}")
    srv.call(lambda: srv.app[POLLER].requested.set())
    wait_until(lambda: metric(srv, "steering_task_failures_total", task="fleet-fetch") >= 1, timeout_s=20)
    assert fleet(srv)["revision"] == "r4"
    assert "coverageZones: required" in health(srv)["fleet"]["fetch"]["last_error"]


def test_first_start_without_a_reachable_source_or_copy_is_a_config_error(tmp_path: Path) -> None:
    from steering import config as steering_config
    from steering.service import load_all
    from steer_helpers import free_port

    url = f"http://user:secret@127.0.0.1:{free_port()}/czf.json?token=abc"
    config = write_setup(tmp_path, extra=f'fleet_url = "{url}"')
    config.write_text(config.read_text().replace('fleet_file = "fleet.toml"', 'fleet_file = "fleet.json"'))
    with pytest.raises(steering_config.ConfigError) as err:
        load_all(steering_config.load(config))
    message = str(err.value)
    assert message.startswith("steering.fleet_url: http://127.0.0.1:") and "no last good copy" in message
    assert "secret" not in message and "token" not in message and "abc" not in message


@pytest.mark.parametrize("url, shown", [
    ("https://to.example.net/api/4.0/czf.json", "https://to.example.net/api/4.0/czf.json"),
    ("https://user:pw@to.example.net:8443/czf.json", "https://to.example.net:8443/czf.json"),
    ("http://[2001:db8::1]:81/czf?key=s3cret", "http://[2001:db8::1]:81/czf?…"),
], ids=["plain", "credentials", "v6-and-query"])
def test_urls_are_shown_without_secrets(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize("setting, message", [
    ('fleet_url = "ftp://to.example.net/czf.json"', "steering.fleet_url: must be an http(s) URL"),
    ('fleet_url = "https:///czf.json"', "steering.fleet_url: must be an http(s) URL"),
    ("fleet_poll_interval_s = 0", "steering.fleet_poll_interval_s: must be at least 1"),
    ("fleet_max_bytes = 10", "steering.fleet_max_bytes: must be at least 1024"),
], ids=["scheme", "no-host", "interval", "max-bytes"])
def test_fleet_url_settings_name_the_key(tmp_path: Path, setting: str, message: str) -> None:
    from steering import config as steering_config

    config = write_setup(tmp_path, extra=setting)
    with pytest.raises(steering_config.ConfigError) as err:
        steering_config.load(config)
    assert message in str(err.value)
