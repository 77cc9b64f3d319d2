"""Headless Chromium (Debian's /usr/bin/chromium driven by Playwright — never `playwright install`) opens
the catalog page, plays a title with the shipped hls.js (currentTime advances), the appliance serving it
is killed, and playback continues from the other appliance. Screenshots of the catalog, player and fleet
pages go to artifacts/ under the repo root.
Chromium runs with its web security on: the appliances' segments are cross-origin to the player page,
and their CORS answers (checked first, as a preflight) are what let it play."""
from __future__ import annotations

import os
import signal
import time
from urllib.parse import urlsplit

import requests

from playback_testkit import TITLE
from tests.steering.steer_helpers import wait_until

import playwright.sync_api as playwright  # noqa: E402 - installed by scripts/setup (never `playwright install`)
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]


def appliance_sends_cors(stack) -> bool:
    url = next(iter(stack.locations().values()))[0]
    resp = requests.options(url, headers={"Origin": stack.playback.url, "Access-Control-Request-Method": "GET",
                                          "Access-Control-Request-Headers": "range"}, timeout=5)
    return bool(resp.headers.get("Access-Control-Allow-Origin")) and "range" in resp.headers.get(
        "Access-Control-Allow-Headers", "").lower()


def kill_tree(pid: int) -> None:
    children = [int(e) for e in os.listdir("/proc") if e.isdigit() and _parent(int(e)) == pid]
    os.kill(pid, signal.SIGKILL)
    for child in children:
        kill_tree(child)


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def wait_js(page, expression: str, timeout_s: float):
    page.wait_for_function(expression, timeout=timeout_s * 1000, polling=100)
    return page.evaluate(expression)


def test_browser_plays_and_fails_over_when_the_serving_appliance_dies(stack, artifacts):
    args = list(ARGS)
    assert appliance_sends_cors(stack)
    by_host = {f"127.0.0.1:{port}": name for name, port in stack.ports.items()}
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            page.goto(stack.playback.url + "/")
            page.wait_for_selector(f'a.card[data-title="{TITLE}"] img', timeout=10_000)
            page.wait_for_function("document.querySelector('a.card img').naturalWidth > 0", timeout=10_000)
            page.screenshot(path=str(artifacts / "playback-catalog.png"))

            page.click(f'a.card[data-title="{TITLE}"]')
            page.wait_for_url(f"**/play/{TITLE}")
            page.goto(stack.playback.url + f"/play/{TITLE}?buffer=4")  # a short buffer: the kill must matter
            wait_js(page, "document.getElementById('video').currentTime > 2", 30)
            served = page.evaluate("window.playerState.servedBy")
            victim = by_host[served]
            kill_tree(stack.apps[victim].proc.pid)
            killed_at = page.evaluate("document.getElementById('video').currentTime")
            killed_frags = page.evaluate("window.playerState.frags")
            # playback goes on well past what was buffered when the appliance died, from the other one
            wait_js(page, f"document.getElementById('video').currentTime > {killed_at + 8}", 40)
            state = page.evaluate("window.playerState")
            assert state["frags"] > killed_frags
            assert state["hosts"][-1] != served and by_host[state["hosts"][-1]] != victim, state
            assert not any("fatal" in e for e in state["errors"] if "bufferStalled" not in e), state["errors"]
            time.sleep(0.3)
            page.screenshot(path=str(artifacts / "playback-player.png"))

            page.goto(stack.playback.url + "/fleet")
            page.wait_for_selector(f'tr[data-appliance="{victim}"] td.down', timeout=15_000)
            page.screenshot(path=str(artifacts / "playback-fleet.png"))
        finally:
            browser.close()
            stack.apps[victim].proc.wait(5) if "victim" in locals() else None
            if "victim" in locals():
                stack.restart(victim)
    for name in ("playback-catalog.png", "playback-player.png", "playback-fleet.png"):
        assert (artifacts / name).stat().st_size > 1000
    assert urlsplit(stack.playback.url).hostname == "127.0.0.1"


def test_browser_moves_off_a_drained_appliance_without_a_stall(stack, artifacts):
    """`oca drain` on the appliance serving a play: steering stops naming it, the steering manifest
    leaves its pathway out and hls.js moves to the other site's at its next reload — no stall, while
    the drained appliance still answers the URLs it was given; the fleet page says why it drains;
    `oca undrain` and it is offered again."""
    args = list(ARGS)
    assert appliance_sends_cors(stack)
    by_host = {f"127.0.0.1:{port}": name for name, port in stack.ports.items()}
    reason = "fan swap 14:00 (OPS-1234)"
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        victim = None
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            page.goto(stack.playback.url + f"/play/{TITLE}?buffer=4")
            wait_js(page, "document.getElementById('video').currentTime > 2", 30)
            page.evaluate("""() => {
                window.drainWatch = {waiting: 0, urls: [], armed: false};
                window.hls.on(Hls.Events.FRAG_LOADED, (_, d) => window.drainWatch.urls.push(d.frag.url));
                document.getElementById('video').addEventListener('waiting', () => {
                    if (window.drainWatch.armed) window.drainWatch.waiting += 1; });
            }""")
            wait_js(page, "window.drainWatch.urls.length > 0", 20)
            served = page.evaluate("window.playerState.servedBy")
            victim = by_host[served]
            app = stack.apps[victim]
            admin = ("--admin", f"http://127.0.0.1:{app.admin_port}")
            page.evaluate("window.drainWatch.armed = true")
            drained_at = page.evaluate("document.getElementById('video').currentTime")
            app.cli("drain", "--reason", reason, *admin)
            victim_port = f":{stack.ports[victim]}/"
            # no new steer answer names it (one heartbeat later), and none does after
            wait_until(lambda: (locs := stack.locations()) and not any(victim_port in u for us in locs.values()
                                                                        for u in us), timeout_s=10, every_s=0.1)
            for _ in range(5):
                assert not any(victim_port in u for us in stack.locations().values() for u in us)
                time.sleep(0.1)
            # the player moves to the other site's pathway at a steering reload and plays on
            wait_js(page, f"window.playerState.hosts[window.playerState.hosts.length - 1] !== '{served}'", 20)
            wait_js(page, f"document.getElementById('video').currentTime > {drained_at + 8}", 40)
            state = page.evaluate("window.playerState")
            watch = page.evaluate("window.drainWatch")
            assert by_host[state["hosts"][-1]] != victim and victim.split("-")[0] not in (state["steering"] or [])
            assert watch["waiting"] == 0, f"the player stalled: {state['errors']}"
            assert not any("fatal" in e or "bufferStalled" in e for e in state["errors"]), state["errors"]
            # every URL the drained appliance was given still works
            old = [u for u in watch["urls"] if urlsplit(u).netloc == served]
            assert old
            for url in old[-3:]:
                r = requests.get(url, headers={"Range": "bytes=0-1023"}, timeout=10)
                assert r.status_code == 206 and len(r.content) == 1024
            page.screenshot(path=str(artifacts / "playback-drained-player.png"))
            page.goto(stack.playback.url + "/fleet")
            cell = page.wait_for_selector(f'tr[data-appliance="{victim}"] td.draining', timeout=15_000)
            assert reason in cell.text_content()
            page.screenshot(path=str(artifacts / "playback-drained-fleet.png"))
            # undrain: steering offers it again
            app.cli("undrain", *admin)
            victim = None
            wait_until(lambda: any(victim_port in u for us in stack.locations().values() for u in us),
                       timeout_s=15, every_s=0.1)
        finally:
            browser.close()
            if victim is not None:
                stack.apps[victim].cli("undrain", "--admin", f"http://127.0.0.1:{stack.apps[victim].admin_port}",
                                       check=False)
    stack.wait_steered(2)
