"""The fleet page shows what each appliance heard over BGP and flags a site whose appliances heard
different routes: headless Chromium (Debian's, via Playwright) on playback's /fleet, playback in front of
a real steering (in-process) fed real heartbeats — two ams appliances with established sessions that
heard different prefixes, and appliances with no BGP at all."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import playwright.sync_api as playwright

from contracts.heartbeat import BgpSession, Route, RoutesUpdate
from playback_testkit import PlaybackProcess, playback_toml
from test_playback_demand import make_origin
from tests.steering.steer_helpers import SITES, ServerThread, heartbeat, write_setup

CHROMIUM = "/usr/bin/chromium"


def with_bgp(hb, prefixes: list[str]):
    now = time.time()
    health = dataclasses.replace(hb.health, bgp=(
        BgpSession("192.0.2.1", 64500, "up", now - 60, len(prefixes), 0, now),
        BgpSession("2001:db8::1", 64500, "connect", now - 5, 0),))
    routes = RoutesUpdate(1, True, tuple(Route(p, (64500,), 10) for p in prefixes))
    return dataclasses.replace(hb, health=health, routes=routes)


def test_the_fleet_page_shows_sessions_prefixes_and_a_site_that_heard_different_routes(tmp_path: Path) -> None:
    config = write_setup(tmp_path / "steering", health={"missed_reports": 1000})
    with ServerThread(config) as srv:
        heard = {"ams-1": ["100.64.0.0/16", "100.65.0.0/16"], "ams-2": ["100.64.0.0/16"]}
        for site in SITES:
            for i in (1, 2, 3):
                name = f"{site}-{i}"
                hb = heartbeat(name, site)
                r = srv.post_heartbeat(with_bgp(hb, heard[name]) if name in heard else hb)
                assert r.status_code == 200, r.text
        pb_config = tmp_path / "playback.toml"
        pb_config.write_text(playback_toml(make_origin(tmp_path / "origin"), [srv.url]))
        pb = PlaybackProcess(pb_config)
        try:
            with playwright.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                try:
                    page = browser.new_page(viewport={"width": 1300, "height": 800})
                    page.goto(pb.url + "/fleet")
                    page.wait_for_selector('tr[data-appliance="ams-1"]', timeout=15_000)
                    cell = lambda a: page.inner_text(f'tr[data-appliance="{a}"] td:last-child')  # noqa: E731
                    assert cell("ams-1") == "1/2 up · 2 prefixes"
                    assert cell("ams-2") == "1/2 up · 1 prefixes"
                    assert cell("fra-1") == "–"  # no BGP: nothing to show
                    warning = page.inner_text(".bgp-differ")
                    assert "heard different routes" in warning and "100.65.0.0/16" in warning
                    assert page.locator(".bgp-differ").count() == 1  # only ams: fra and lon have no BGP
                    page.screenshot(path=str(tmp_path / "fleet-bgp.png"))
                finally:
                    browser.close()
        finally:
            pb.stop()
