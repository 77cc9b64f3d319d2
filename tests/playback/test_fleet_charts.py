"""The fleet page's charts endpoint, GET /v1/fleet/charts: the pure core (query ranges, the queries,
Prometheus matrices shaped into series) table-driven; `playback serve` against a stand-in Prometheus
on 127.0.0.1 that answers, fails, or talks nonsense — and without one configured; and each chart's
query evaluated by Prometheus's own engine (`promtool test rules`) on series made up to the expected
values. The real Prometheus, against a real lab, is in tests/ops/test_lab_prometheus.py."""
from __future__ import annotations

import json
import shutil
import subprocess
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from playback.config import ConfigError, parse
from playback.core import charts as core
from playback_testkit import PlaybackProcess, playback_toml
from tests.steering.steer_helpers import free_port

# ---- the core -------------------------------------------------------------------------------------


@pytest.mark.parametrize("minutes, step, rate", [(5, 2, 60), (15, 4, 60), (60, 15, 60), (360, 90, 180),
                                                 (1440, 360, 720)], ids=["5m", "15m", "1h", "6h", "24h"])
def test_window_steps_align_and_rate_covers_two_steps(minutes, step, rate):
    w = core.window(1_000_003.7, minutes, rate_window_s=60)
    assert (w.step_s, w.rate_s) == (step, rate)
    assert w.end % step == 0 and w.end <= 1_000_003.7 < w.end + step
    assert w.end - w.start == minutes * 60 and (w.end - w.start) / w.step_s <= core.MAX_POINTS


@pytest.mark.parametrize("minutes", [0, 7, -1, 10_000], ids=["zero", "not-offered", "negative", "huge"])
def test_window_refuses_ranges_not_offered(minutes):
    with pytest.raises(core.ChartError) as err:
        core.window(0, minutes, 60)
    assert err.value.status_hint == 400


def test_queries_group_by_the_target_labels_and_use_the_rate_window():
    by = {c.name: c for c in core.charts(core.window(1e6, 5, 10))}
    assert list(by) == ["egress", "offload", "fill"]
    assert by["egress"].query == '8 * sum by (appliance, site) (rate(oca_bytes_sent_total{job="oca"}[10s]))'
    assert 'result="miss"' in by["offload"].query and "sum by (site)" in by["offload"].query
    assert 'status=~"200|206|304|404"' in by["offload"].query
    assert "fill_manifest_files" in by["fill"].query and "clamp_max" in by["fill"].query
    assert (by["egress"].by, by["offload"].by, by["fill"].by) == ("appliance", "site", "appliance")


EGRESS = core.charts(core.window(1e6, 5, 10))[0]


def matrix(*series):
    return {"resultType": "matrix", "result": [{"metric": m, "values": v} for m, v in series]}


@pytest.mark.parametrize("answer, expected", [
    (matrix(({"appliance": "b1", "site": "b"}, [[10, "5"], [12, "NaN"], [14, "7.25"]]),
            ({"appliance": "a1", "site": "a"}, [[10, "+Inf"], [12, "1e3"]])),
     [("a1", [[10.0, None], [12.0, 1000.0]], 1000.0), ("b1", [[10.0, 5.0], [12.0, None], [14.0, 7.25]], 7.25)]),
    (matrix(({"instance": "127.0.0.1:9"}, [[10, "NaN"]])), [("127.0.0.1:9", [[10.0, None]], None)]),
    (matrix(), []),
], ids=["sorted-gaps-and-last", "unlabelled-all-gaps", "empty"])
def test_series_from_a_matrix(answer, expected):
    got = core.series(EGRESS, answer)
    assert [(s["name"], s["points"], s["last"]) for s in got] == expected


@pytest.mark.parametrize("answer", [
    None, {"resultType": "vector", "result": []}, {"resultType": "matrix", "result": {}},
    matrix(({"appliance": "a"}, [[10, "x"]])), matrix(({"appliance": "a"}, [["10", "1"]])),
    matrix(({"appliance": "a"}, [[10, "1", 3]])), {"resultType": "matrix", "result": ["nope"]},
], ids=["none", "vector", "result-not-list", "value-not-number", "time-not-number", "triple", "item-not-object"])
def test_series_refuses_a_malformed_answer(answer):
    with pytest.raises(core.BadAnswer) as err:
        core.series(EGRESS, answer)
    assert err.value.status_hint == 502


def test_series_are_bounded():
    many = matrix(*(({"appliance": f"a{i:03}"}, [[t, "1"] for t in range(1000)]) for i in range(100)))
    got = core.series(EGRESS, many)
    assert len(got) == core.MAX_SERIES and all(len(s["points"]) <= core.MAX_POINTS + 1 for s in got)


# ---- the endpoint, against a stand-in Prometheus ---------------------------------------------------

class FakePrometheus:
    """/api/v1/query_range on 127.0.0.1: answers `self.reply(query)` -> (status, body bytes); records queries."""

    def __init__(self) -> None:
        self.queries: list[dict[str, list[str]]] = []
        self.reply = self.ok
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                parts = urlsplit(self.path)
                params = parse_qs(parts.query)
                fake.queries.append(params)
                status, body = fake.reply(params["query"][0]) if parts.path == "/api/v1/query_range" else (404, b"")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def ok(query: str) -> tuple[int, bytes]:
        label = "site" if query.startswith("clamp_min") else "appliance"
        data = matrix(({label: "x1", "site": "x"}, [[100, "0.5"], [102, "NaN"], [104, "0.75"]]))
        return 200, json.dumps({"status": "success", "data": data}).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def prometheus():
    fake = FakePrometheus()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def charted(stack, prometheus, tmp_path_factory):
    """A second `playback serve` beside the stack's, with the stand-in Prometheus and no answer cache."""
    folder = tmp_path_factory.mktemp("charted")
    config = folder / "playback.toml"
    config.write_text(playback_toml(stack.folder / "origin", [stack.steering.url],
                                    extra=f'prometheus_url = "{prometheus.url}/"\ncharts_cache_s = 0\n'
                                          "charts_rate_window_s = 10\n"))
    pb = PlaybackProcess(config)
    yield pb
    pb.stop()


def charts(pb: PlaybackProcess, minutes: str = "5") -> requests.Response:
    return requests.get(f"{pb.url}/v1/fleet/charts", params={"minutes": minutes}, timeout=10)


def test_charts_run_the_three_queries_and_shape_the_answer(charted, prometheus):
    prometheus.reply, prometheus.queries[:] = prometheus.ok, []
    r = charts(charted)
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    body = r.json()
    assert body["source"] == "prometheus" and body["step_s"] == 2 and body["rate_window_s"] == 10
    assert [c["name"] for c in body["charts"]] == ["egress", "offload", "fill"]
    assert [c["unit"] for c in body["charts"]] == ["bit/s", "ratio", "ratio"]
    for chart in body["charts"]:
        assert chart["definition"] and chart["query"]
        [s] = chart["series"]
        assert s["points"] == [[100, 0.5], [102, None], [104, 0.75]] and s["last"] == 0.75
    sent = sorted(q["query"][0] for q in prometheus.queries)
    assert sent == sorted(c["query"] for c in body["charts"])  # only ours, never the caller's
    assert all(q["step"] == ["2"] and float(q["end"][0]) - float(q["start"][0]) == 300 for q in prometheus.queries)


@pytest.mark.parametrize("reply, status, reason", [
    (lambda q: (500, b'{"status":"error","error":"boom"}'), 503, "prometheus-unavailable"),
    (lambda q: (200, b"<html>not json</html>"), 503, "prometheus-unavailable"),
    (lambda q: (400, b'{"status":"error","errorType":"bad_data","error":"parse error"}'), 502, "prometheus-bad-answer"),
    (lambda q: (200, b'{"status":"success","data":{"resultType":"vector","result":[]}}'), 502,
     "prometheus-bad-answer"),
], ids=["5xx", "not-json", "4xx", "not-a-matrix"])
def test_a_failing_prometheus_is_a_json_error_never_a_500(charted, prometheus, reply, status, reason):
    prometheus.reply = reply
    try:
        r = charts(charted)
    finally:
        prometheus.reply = prometheus.ok
    assert r.status_code == status and r.json()["error"] == reason, r.text
    assert ("Retry-After" in r.headers) == (status == 503)


@pytest.mark.parametrize("minutes", ["7", "abc", "-5", "", "१५"], ids=["not-offered", "word", "negative", "empty",
                                                                     "non-ascii-digits"])
def test_a_range_not_offered_is_400(charted, minutes):
    r = charts(charted, minutes)
    assert r.status_code == 400 and r.json()["error"] == "bad-request"


def test_answers_are_cached_for_charts_cache_s(stack, prometheus, tmp_path):
    config = tmp_path / "playback.toml"
    config.write_text(playback_toml(stack.folder / "origin", [stack.steering.url],
                                    extra=f'prometheus_url = "{prometheus.url}"\ncharts_cache_s = 60\n'))
    pb = PlaybackProcess(config)
    try:
        prometheus.queries[:] = []
        assert charts(pb).status_code == 200 and charts(pb).status_code == 200
        assert len(prometheus.queries) == 3  # the second page's refresh cost Prometheus nothing
        assert charts(pb, "15").status_code == 200 and len(prometheus.queries) == 6
    finally:
        pb.stop()


def test_without_prometheus_404_and_with_an_unreachable_one_503(stack, tmp_path):
    assert requests.get(f"{stack.playback.url}/v1/fleet/charts", timeout=10).json()["error"] == "no-prometheus"
    assert requests.get(f"{stack.playback.url}/v1/fleet/charts", timeout=10).status_code == 404
    config = tmp_path / "playback.toml"
    config.write_text(playback_toml(stack.folder / "origin", [stack.steering.url],
                                    extra=f'prometheus_url = "http://127.0.0.1:{free_port()}"\n'
                                          "prometheus_timeout_s = 2\n"))
    pb = PlaybackProcess(config)
    try:
        r = charts(pb)
        assert r.status_code == 503 and r.json()["error"] == "prometheus-unavailable" and r.headers["Retry-After"]
    finally:
        pb.stop()


@pytest.mark.parametrize("value", ['"ftp://x"', '"127.0.0.1:9090"', '"http://a b"', "9090"],
                         ids=["scheme", "no-scheme", "space", "not-a-string"])
def test_check_config_names_a_bad_prometheus_url(stack, tmp_path, value):
    text = playback_toml(stack.folder / "origin", [stack.steering.url], extra=f"prometheus_url = {value}\n")
    with pytest.raises(ConfigError, match=r"playback\.prometheus_url"):
        parse(tomllib.loads(text))


# ---- the queries, evaluated by Prometheus's own engine (`promtool test rules`) ----------------------

SERIES = {  # 2 s apart, as the lab scrapes
    'oca_bytes_sent_total{job="oca",appliance="a1",site="a",tier="ssd"}': "0+1000x10",
    'oca_bytes_sent_total{job="oca",appliance="a1",site="a",tier="hdd"}': "0+250x10",
    'oca_bytes_sent_total{job="oca",appliance="b1",site="b",tier="ssd"}': "0x10",
    'oca_requests_total{job="oca",appliance="a1",site="a",status="206"}': "0+2x10",
    'oca_requests_total{job="oca",appliance="a2",site="a",status="206"}': "0+1x10",
    'oca_requests_total{job="oca",appliance="a2",site="a",status="404"}': "0+1x10",
    'oca_requests_total{job="oca",appliance="a2",site="a",status="403"}': "0+50x10",  # refused: not asked of it
    'oca_cache_lookups_total{job="oca",appliance="a1",site="a",result="miss"}': "0x10",
    'oca_cache_lookups_total{job="oca",appliance="a2",site="a",result="miss"}': "0+1x10",
    'oca_requests_total{job="oca",appliance="b1",site="b",status="206"}': "0+4x10",
    'oca_cache_lookups_total{job="oca",appliance="b1",site="b",result="miss"}': "0+4x10",  # pulled, then served
    'oca_indexed_files{job="oca",appliance="a1",site="a"}': "1x10",
    'oca_indexed_files{job="oca",appliance="a2",site="a"}': "3x10",
    'oca_indexed_files{job="oca",appliance="b1",site="b"}': "0x10",
    'oca_indexed_files{job="oca",appliance="b2",site="b"}': "5x10",  # no fill run yet: no manifest
    'fill_manifest_files{job="node",appliance="a1",site="a"}': "2x10",
    'fill_manifest_files{job="node",appliance="a2",site="a"}': "2x10",
    'fill_manifest_files{job="node",appliance="b1",site="b"}': "0x10",  # nothing planned: complete
}
EXPECTED = {
    "egress": [('{appliance="a1",site="a"}', 8 * 1250 / 2), ('{appliance="b1",site="b"}', 0)],
    "offload": [('{site="a"}', 1 - 1 / 4), ('{site="b"}', 0)],
    "fill": [('{appliance="a1",site="a"}', 0.5), ('{appliance="a2",site="a"}', 1), ('{appliance="b1",site="b"}', 1)],
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_query_on_prometheus_own_engine(tmp_path, name):
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed: scripts/setup installs Debian's prometheus"
    [chart] = [c for c in core.charts(core.Window(start=0, end=20, step_s=2, rate_s=8)) if c.name == name]
    (tmp_path / "rules.yml").write_text("groups: []\n")
    test = {"rule_files": ["rules.yml"], "evaluation_interval": "2s", "tests": [{
        "interval": "2s", "input_series": [{"series": k, "values": v} for k, v in SERIES.items()],
        "promql_expr_test": [{"expr": chart.query, "eval_time": "16s",
                              "exp_samples": [{"labels": lb, "value": v} for lb, v in EXPECTED[name]]}]}]}
    (tmp_path / "test.yml").write_text(json.dumps(test))  # JSON is YAML
    out = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


# ---- the page without a Prometheus: its own samples -------------------------------------------------

def test_fleet_page_without_prometheus_draws_from_its_own_samples(stack, tmp_path):
    import playwright.sync_api as playwright  # installed by scripts/setup (never `playwright install`)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 800})
            page.goto(stack.playback.url + "/fleet")
            # the charts refresh every 5 s; by the second, the page has several samples of /v1/fleet
            page.wait_for_function("document.body.dataset.charts === 'page' && document.querySelectorAll("
                                   "'svg.chart[data-chart=fill] path.line').length > 0", timeout=20_000)
            paths = page.evaluate("Object.fromEntries(['egress', 'fill'].map(n => [n, [...document.querySelectorAll("
                                  "`svg.chart[data-chart=\"${n}\"] path.line`)].map(p => p.getAttribute('d'))]))")
            offload = page.inner_text("#chart-offload")
            source = page.inner_text("#charts-source")
            page.screenshot(path=str(tmp_path / "fleet-no-prometheus.png"), full_page=True)
        finally:
            browser.close()
    assert paths["egress"] and paths["fill"] and all("L" in d for d in paths["egress"] + paths["fill"]), paths
    assert "needs Prometheus" in offload and source.startswith("no Prometheus configured"), (offload, source)
