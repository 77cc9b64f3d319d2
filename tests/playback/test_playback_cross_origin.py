"""A player on somebody else's page: a streaming service's own web page (here a small server on another
port, so another origin) loads hls.js and plays the title from playback's master playlist, with the
segments from the appliances — every request cross-origin, in headless Chromium with its web security
on (no --disable-web-security). Playback's and the appliances' CORS answers are what let it play."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import playwright.sync_api as playwright  # installed by scripts/setup (never `playwright install`)
from aiohttp import web

from playback_testkit import TITLE
from test_playback_browser import ARGS, CHROMIUM, wait_js
from tests.support.appthread import AppThread

HLS_JS = Path(__file__).resolve().parents[2] / "playback/static/vendor/hls.min.js"
PAGE = """<!doctype html><meta charset="utf-8"><title>another origin's player</title>
<video id="video" muted autoplay playsinline width="640"></video>
<script src="/hls.min.js"></script>
<script>
window.state = {errors: [], frags: []};
const hls = new Hls({maxBufferLength: 6});
hls.on(Hls.Events.ERROR, (e, d) => window.state.errors.push(d.details + (d.fatal ? " (fatal)" : "")));
hls.on(Hls.Events.FRAG_LOADED, (e, d) => window.state.frags.push(d.frag.url));
hls.loadSource(%(master)s);
hls.attachMedia(document.getElementById("video"));
</script>"""


def page_server(master: str) -> AppThread:
    async def index(request: web.Request) -> web.Response:
        return web.Response(text=PAGE % {"master": f'"{master}"'}, content_type="text/html")

    async def hls_js(request: web.Request) -> web.FileResponse:
        return web.FileResponse(HLS_JS)

    def app() -> web.Application:
        a = web.Application()
        a.router.add_get("/", index)
        a.router.add_get("/hls.min.js", hls_js)
        return a
    return AppThread(app)


def test_a_page_of_another_origin_plays_the_title(stack):
    master = f"{stack.playback.url}/v1/playback/{TITLE}/master.m3u8"
    appliances = {f"127.0.0.1:{port}" for port in stack.ports.values()}
    with page_server(master) as site, playwright.sync_playwright() as p:
        page_origin = site.url
        assert page_origin != stack.playback.url
        browser = p.chromium.launch(executable_path=CHROMIUM, args=list(ARGS))  # web security on
        try:
            page = browser.new_page()
            responses: list[playwright.Response] = []
            page.on("response", lambda r: responses.append(r))
            page.goto(page_origin + "/")
            wait_js(page, "document.getElementById('video').currentTime > 3", 40)
            state = page.evaluate("window.state")
            # (url, the Origin the browser sent, the Access-Control-Allow-Origin it was answered)
            seen = [(r.url, r.request.header_value("origin"), r.header_value("access-control-allow-origin"))
                    for r in responses]
        finally:
            browser.close()
    assert not [e for e in state["errors"] if "fatal" in e], state["errors"]
    assert {urlsplit(u).netloc for u in state["frags"]} <= appliances and state["frags"]
    cross = [(u, origin, allow) for u, origin, allow in seen if not u.startswith(page_origin)]
    to_playback = [c for c in cross if c[0].startswith(stack.playback.url)]
    to_appliances = [c for c in cross if urlsplit(c[0]).netloc in appliances]
    assert to_playback and to_appliances
    for url, origin, allow in to_playback + to_appliances:  # each one a CORS request the server allowed
        assert origin == page_origin and allow in ("*", page_origin), (url, origin, allow)
