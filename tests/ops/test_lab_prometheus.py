"""The lab's Prometheus (scripts/labprom.py, started by scripts/labdaemons.py): its prometheus.yml passes
`promtool check config`; in a real lab (2 s sample title, with the night's fill) every daemon the lab
started is a target and up, and the key series of each kind of daemon are there; and the fleet page
draws its three charts from it in headless Chromium (Debian's, driven by Playwright, as in
tests/playback/test_playback_browser.py) while plays and misses run. The screenshot goes under the
test's tmp dir and to artifacts/lab-fleet-charts.png. Waits are bounded; nothing asserts a duration."""
from __future__ import annotations

import collections
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

import playwright.sync_api as playwright  # installed by scripts/setup (never `playwright install`)
from contracts.keys import load_keyring
from contracts.token import sign_path

from tests.support.labtest import LAB_PY, REPO, eventually  # also puts scripts/ on sys.path

import labprom  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
ENDPOINTS = {  # what lab.json lists, as the lab builds it
    "origin": "http://127.0.0.1:8070",
    "steering_replicas": {"steering-1": "http://127.0.0.1:8101", "steering-2": "http://127.0.0.1:8102"},
    "appliances": {name: {"url": f"http://127.0.0.1:{8180 + i}", "admin": f"http://127.0.0.1:{9180 + i}"}
                   for i, name in enumerate(("lab-a1", "lab-a2", "lab-b1", "lab-b2"))},
    "fill_exporters": {name: f"http://127.0.0.1:{9100 + i}" for i, name in enumerate(("lab-a1", "lab-a2", "lab-b1",
                                                                                       "lab-b2"))},
    "playback": "http://127.0.0.1:8090",
}


def need(binary: str) -> str:
    path = shutil.which(binary)
    assert path, f"{binary} is not installed: scripts/setup installs it (Debian's prometheus packages)"
    return path


def promtool(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([need("promtool"), "check", "config", str(config)], capture_output=True, text=True,
                          timeout=60)


def get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())



# ---- the config ------------------------------------------------------------------------------------

def test_promtool_accepts_the_labs_config_with_every_daemon_labelled(tmp_path):
    found = labprom.targets(ENDPOINTS, "127.0.0.1:9090")
    assert [(t.job, t.daemon) for t in found] == [
        ("origin", "origin"), ("steering", "steering-1"), ("steering", "steering-2"),
        ("oca", "lab-a1"), ("oca", "lab-a2"), ("oca", "lab-b1"), ("oca", "lab-b2"),
        ("node", "node-lab-a1"), ("node", "node-lab-a2"), ("node", "node-lab-b1"), ("node", "node-lab-b2"),
        ("playback", "playback"), ("prometheus", "prometheus")]
    assert {t.address: dict(t.labels) for t in found if t.job in ("oca", "node")}["127.0.0.1:9182"] == {
        "appliance": "lab-b1", "site": "lab-b"}
    config = tmp_path / "prometheus.yml"
    config.write_text(labprom.prometheus_yml(found))
    out = promtool(config)
    assert out.returncode == 0 and "SUCCESS" in out.stdout + out.stderr, out.stdout + out.stderr


def test_promtool_accepts_a_bearer_token_file_and_refuses_a_broken_config(tmp_path):
    token = tmp_path / "metrics.token"
    token.write_text("a-token\n")
    guarded = [labprom.Target("steering", "steering-1", "127.0.0.1:8101", token_file=str(token))]
    config = tmp_path / "prometheus.yml"
    config.write_text(labprom.prometheus_yml(guarded))
    assert "credentials_file" in config.read_text() and promtool(config).returncode == 0
    with pytest.raises(ValueError, match="one token file"):  # one job, one credential
        labprom.prometheus_yml([*guarded, labprom.Target("steering", "steering-2", "127.0.0.1:8102")])
    config.write_text(labprom.prometheus_yml(guarded).replace('scrape_interval: "2s"', 'scrape_interval: "1s"'))
    assert promtool(config).returncode != 0  # the check has teeth: a timeout longer than the interval


# ---- the lab without a (working) Prometheus: it says so and goes on ---------------------------------

@pytest.mark.parametrize("found, said", [(None, "prometheus is not installed"), ("/bin/false", "prometheus exited")],
                         ids=["missing", "exits-at-once"])
def test_the_lab_goes_on_without_prometheus(tmp_path, monkeypatch, capsys, found, said):
    import labdaemons
    monkeypatch.setattr(labprom, "binary", lambda name="prometheus": found if name == "prometheus" else None)
    (tmp_path / "logs").mkdir()
    lab = labdaemons.Lab(tmp_path, replicas=1, detach=True)
    lab.endpoints["appliances"] = {}
    lab.prometheus(playback_port=1)
    assert said in capsys.readouterr().err
    assert "prometheus" not in lab.endpoints
    assert "prometheus_url" not in labdaemons.playback_toml(1, '"http://127.0.0.1:2"', tmp_path, None)
    assert all(p.poll() is not None for p in lab.procs.values())  # nothing left running


# ---- a real lab ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    for binary in ("prometheus", "prometheus-node-exporter", "promtool"):
        need(binary)
    state = tmp_path_factory.mktemp("lab-prometheus") / "lab"
    out = subprocess.run([sys.executable, str(LAB_PY), "up", "--detach", "--seconds", "2", "--state", str(state)],
                         capture_output=True, text=True, timeout=500)
    try:
        assert out.returncode == 0, out.stderr[-3000:]
        info = json.loads((state / "lab.json").read_text())
        assert "prometheus" in info and "prometheus:   http://127.0.0.1:" in out.stdout, out.stderr[-3000:]
        info["up_stderr"] = out.stderr  # what `up` said (fill exit codes), for failure messages
        yield state, info
    finally:
        subprocess.run([sys.executable, str(LAB_PY), "down", "--state", str(state)], capture_output=True,
                       timeout=180)


def query(prom: str, promql: str) -> list[dict]:
    return get_json(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))["data"]["result"]


def test_the_labs_prometheus_scrapes_every_daemon_and_the_key_series_exist(lab):
    state, info = lab
    out = promtool(state / "prometheus.yml")
    assert out.returncode == 0, out.stdout + out.stderr
    prom = info["prometheus"]
    healthy: dict[str, str] = {}  # daemon -> the job of its target, once a scrape of it succeeded
    last: dict[str, str] = {}

    def all_up():  # each target up at some poll: on a loaded machine one scrape may time out now and then
        for t in get_json(f"{prom}/api/v1/targets")["data"]["activeTargets"]:
            last[t["labels"]["daemon"]] = t["health"] + " " + t["lastError"]
            if t["health"] == "up":
                healthy[t["labels"]["daemon"]] = t["labels"]["job"]
        return set(healthy) == set(info["daemons"])
    eventually(all_up, "every daemon the lab started a target, and up", timeout_s=90,
               seen=lambda: f"targets: {last}; lab up said: {info['up_stderr'][-1500:]}")
    assert collections.Counter(healthy.values()) == {
        "oca": 4, "node": 4, "steering": 2, "origin": 1, "playback": 1, "prometheus": 1}

    assert {r["metric"]["daemon"] for r in query(prom, "max_over_time(up[5m]) == 1")} == set(info["daemons"])
    for promql, n in (('oca_bytes_sent_total{tier="ssd"}', 4), ('oca_cache_lookups_total{result="miss"}', 4),
                      ("oca_indexed_files", 4), ("fill_manifest_files", 4),
                      ('steering_heartbeats_total{result="ok"} > 0', 2), ("steering_appliances", 6),
                      ("origin_bytes_sent_total", 1), ("playback_uptime_seconds", 1)):
        eventually(lambda promql=promql: len(query(prom, promql)) == n, f"{n} series of {promql}", timeout_s=30,
                   seen=lambda promql=promql: f"{query(prom, promql)}; lab up said: {info['up_stderr'][-1500:]}")
    sites = {r["metric"]["appliance"]: r["metric"]["site"] for r in query(prom, "oca_indexed_files")}
    assert sites == {"lab-a1": "lab-a", "lab-a2": "lab-a", "lab-b1": "lab-b", "lab-b2": "lab-b"}


class Traffic:
    """Plays through playback -> steering -> appliance (ffmpeg), and now and then a signed request an
    appliance must miss (a file of the catalog it does not hold: it pulls it through, so each misses once)."""

    def __init__(self, state: Path, info: dict) -> None:
        self.state, self.info = state, info
        self.stop = threading.Event()
        self.plays = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        catalog = json.loads((state / "origin" / "catalog" / "lab-sample.json").read_text())
        self.keys = [r["key"] for r in catalog["renditions"]]

    def run(self) -> None:
        while not self.stop.is_set():
            subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-i",
                            f"{self.info['playback']}/v1/playback/lab-sample/master.m3u8", "-f", "null", "-"],
                           capture_output=True, timeout=60)
            self.plays += 1
            if self.plays % 5 == 1:
                self.miss_once()
            self.stop.wait(0.3)

    def miss_once(self) -> None:
        for name, app in self.info["appliances"].items():
            held = {f["key"] for f in get_json(f"{app['admin']}/v1/inventory")["files"]}
            missing = [k for k in self.keys if k not in held]
            if missing:
                ring = load_keyring(self.state / "keys" / f"{name}.toml")
                url = app["url"] + sign_path("/" + missing[0], ring, int(time.time()) + 600, None)
                try:
                    urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=0-65535"}),
                                           timeout=10).read()
                except urllib.error.HTTPError:
                    pass  # the fast 404 (the pull goes on in the background)

    def __enter__(self) -> "Traffic":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(90)


DRAWN = """() => Object.fromEntries(['egress', 'offload', 'fill'].map(n => [n,
  [...document.querySelectorAll(`svg.chart[data-chart="${n}"] path.line`)].map(p =>
    ({series: p.dataset.series, d: p.getAttribute('d')}))]))"""


def points(d: str) -> list[tuple[float, float]]:
    return [tuple(map(float, xy.split(","))) for xy in d.replace("M", " ").replace("L", " ").split()]


def test_fleet_page_draws_egress_offload_and_fill_from_the_labs_prometheus(lab, tmp_path):
    state, info = lab
    pb = info["playback"]

    last: dict = {}

    def charted():
        body = last["body"] = get_json(f"{pb}/v1/fleet/charts?minutes=5")
        by = {c["name"]: c["series"] for c in body["charts"]}
        drawn = {n: [s for s in by[n] if sum(v is not None for _, v in s["points"]) >= 2] for n in by}
        busy = [s for s in by["egress"] if any(v for _, v in s["points"][-10:])]
        return body if (len(drawn["egress"]) == 4 and len(drawn["fill"]) == 4 and drawn["offload"] and busy) else None

    def seen() -> str:
        summary = {c["name"]: {s["name"]: s["points"][-6:] for s in c["series"]}
                   for c in last.get("body", {}).get("charts", [])}
        return f"charts: {summary}; lab up said: {info['up_stderr'][-1500:]}"
    with Traffic(state, info) as traffic:
        body = eventually(charted, "the charts' data from Prometheus", timeout_s=90, seen=seen)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"{pb}/fleet?minutes=5")
                page.wait_for_function("document.body.dataset.charts === 'prometheus' && document.querySelectorAll("
                                       "'svg.chart[data-chart=fill] path.line').length === 4", timeout=30_000)
                page.wait_for_selector('tr[data-appliance="lab-b2"]', timeout=15_000)
                drawn = page.evaluate(DRAWN)
                source = page.inner_text("#charts-source")
                legends = page.evaluate("[...document.querySelectorAll('#chart-egress .legend span')].map(s => "
                                        "s.textContent)")
                shot = tmp_path / "fleet-charts.png"
                page.screenshot(path=str(shot), full_page=True)
            finally:
                browser.close()
    assert traffic.plays > 0
    assert source.startswith("from Prometheus"), source
    assert {s["series"] for s in drawn["egress"]} == {"lab-a1", "lab-a2", "lab-b1", "lab-b2"}
    assert {s["series"] for s in drawn["fill"]} == {"lab-a1", "lab-a2", "lab-b1", "lab-b2"}
    assert {s["series"] for s in drawn["offload"]} <= {"lab-a", "lab-b"} and drawn["offload"]
    for name, chart in drawn.items():  # egress and fill are continuous; a site's requests may come and go
        assert all(s["d"].startswith("M") for s in chart) and (all if name != "offload" else any)(
            "L" in s["d"] for s in chart), chart
    ys = [y for s in drawn["egress"] for _, y in points(s["d"])]
    assert max(ys) - min(ys) > 10  # traffic drew a line off the baseline, not a flat zero
    assert len(legends) == 4 and all("bit/s" in text for text in legends), legends
    assert shot.stat().st_size > 20_000
    (REPO / "artifacts").mkdir(exist_ok=True)
    shutil.copyfile(shot, REPO / "artifacts" / "lab-fleet-charts.png")
    assert body["charts"][1]["definition"].startswith("bytes served from the site's own disks")
