"""The fleet page's charts as Prometheus range queries, and their answers as the series the page draws.
Pure: the shell (playback.charts) sends the queries and hands the answers back here.

The appliances' own series, scraped with the target labels `appliance` and `site` on job "oca" (as
the lab's prometheus.yml sets them, scripts/labprom.py), and the fill agent's textfile (node_exporter's
textfile collector on the appliance host, with the same two labels):

  egress   bits/s per appliance: 8 x rate(oca_bytes_sent_total), every body byte it sent (clients,
           and peers filling from it).
  offload  per site, over time: bytes served from the site's own disks / bytes asked of the site.
           Appliances count the bytes they serve (oca_bytes_sent_total), their responses by status
           (oca_requests_total) and each miss (oca_cache_lookups_total{result="miss"}: the file was
           not on their disks when asked; the player took its next URL, or the appliance pulled the
           file from its parent first), but not the bytes a missed request asked for. Valuing every
           request at the site's mean bytes per request, offload = 1 - misses / requests, requests
           being the responses with the file or the fast 404 (200, 206, 304, 404). A window without
           requests is a gap, not a zero.
  fill     per appliance: files held (oca_indexed_files, live) / files in its fill manifest (the agent's
           fill_manifest_files, from its latest run), at most 1: the night's fill arriving. An empty
           manifest is a complete fill (1); until an appliance's first fill run there is no line.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

MAX_POINTS = 240  # per series: the step grows with the range
MAX_SERIES = 64
MIN_STEP_S = 2.0
RANGES_MIN = (5, 15, 60, 360, 1440)  # the ranges the page offers, in minutes


class ChartError(ValueError):
    status_hint = 400
    reason = "bad-request"


class NoPrometheus(ChartError):
    status_hint = 404
    reason = "no-prometheus"


class PrometheusUnavailable(ChartError):
    status_hint = 503
    reason = "prometheus-unavailable"


class BadAnswer(ChartError):
    status_hint = 502
    reason = "prometheus-bad-answer"


@dataclass(frozen=True)
class Window:
    start: float
    end: float
    step_s: float
    rate_s: float  # the rate() window: at least the configured one and two steps


def window(now: float, minutes: int, rate_window_s: float) -> Window:
    """The query range ending now, its step a whole number of seconds and both ends on step
    boundaries (answers line up from one refresh to the next)."""
    if minutes not in RANGES_MIN:
        raise ChartError(f"minutes: one of {', '.join(map(str, RANGES_MIN))}")
    span = minutes * 60.0
    step = max(MIN_STEP_S, float(math.ceil(span / MAX_POINTS)))
    end = math.floor(now / step) * step
    return Window(start=end - span, end=end, step_s=step, rate_s=float(math.ceil(max(rate_window_s, 2 * step))))


@dataclass(frozen=True)
class Chart:
    name: str
    title: str
    unit: str  # bit/s or ratio
    by: str  # the label each series is named by
    query: str
    definition: str


def charts(w: Window, job: str = "oca") -> tuple[Chart, ...]:
    r = f"{w.rate_s:g}s"
    sel = f'job="{job}"'
    return (
        Chart("egress", "Egress per appliance", "bit/s", "appliance",
              f"8 * sum by (appliance, site) (rate(oca_bytes_sent_total{{{sel}}}[{r}]))",
              "body bytes sent per second x 8, to clients and to peers filling from it"),
        Chart("offload", "Offload per site", "ratio", "site",
              f'clamp_min(1 - sum by (site) (rate(oca_cache_lookups_total{{{sel},result="miss"}}[{r}]))'
              f' / sum by (site) (rate(oca_requests_total{{{sel},status=~"200|206|304|404"}}[{r}])), 0)',
              "bytes served from the site's own disks / bytes asked of it, every request valued at the mean: "
              "1 - misses / requests (a request a pull-through answered is a miss)"),
        Chart("fill", "Fill progress", "ratio", "appliance",
              f"clamp_max(max by (appliance, site) (oca_indexed_files{{{sel}}})"
              " / max by (appliance, site) (fill_manifest_files > 0), 1)"
              " or max by (appliance, site) (fill_manifest_files == 0) + 1",
              "files held / files in its fill manifest (from the fill agent's latest run), at most 100%; "
              "an empty manifest is a complete fill"),
    )


def _value(raw: Any) -> float | None:
    """A sample value as Prometheus writes it (a string; "NaN", "+Inf" are gaps)."""
    try:
        v = float(raw)
    except (TypeError, ValueError):
        raise BadAnswer(f"value: {str(raw)[:40]!r} is not a number") from None
    return v if math.isfinite(v) else None


def series(chart: Chart, answer: Any) -> list[dict[str, Any]]:
    """The `data` of a query_range answer (a matrix) as [{name, labels, points: [[t, v|None]], last}],
    sorted by name; a malformed answer raises BadAnswer."""
    if not isinstance(answer, Mapping) or answer.get("resultType") != "matrix" or not isinstance(
            answer.get("result"), list):
        raise BadAnswer(f"{chart.name}: not a matrix")
    out = []
    for item in answer["result"][:MAX_SERIES]:
        labels, values = (item.get("metric"), item.get("values")) if isinstance(item, Mapping) else (None, None)
        if not isinstance(labels, Mapping) or not isinstance(values, list):
            raise BadAnswer(f"{chart.name}: a series without metric or values")
        points = []
        for pair in values[-MAX_POINTS - 1:]:
            if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[0], (int, float)):
                raise BadAnswer(f"{chart.name}: a point is not [time, value]")
            v = _value(pair[1])
            points.append([float(pair[0]), None if v is None else round(v, 6)])
        name = str(labels.get(chart.by) or labels.get("instance") or "?")
        last = next((v for _, v in reversed(points) if v is not None), None)
        out.append({"name": name, "labels": {str(k): str(v) for k, v in labels.items()}, "points": points,
                    "last": last})
    return sorted(out, key=lambda s: s["name"])


def body(w: Window, found: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The answer of GET /v1/fleet/charts."""
    return {"source": "prometheus", "start": w.start, "end": w.end, "step_s": w.step_s, "rate_window_s": w.rate_s,
            "charts": [{"name": c.name, "title": c.title, "unit": c.unit, "definition": c.definition,
                        "query": c.query, "series": found.get(c.name, [])} for c in charts(w)]}
