"""What a `fill plan` run tells Prometheus: the planner is a one-shot job (a systemd timer starts it),
so nothing scrapes it; it writes node_exporter's textfile format (prometheus-client's
`write_to_textfile`: a temp file renamed over the last) at the end of every run, ok or not.
Alert on `fill_plan_last_success_timestamp_seconds` growing old, or on `fill_plan_ok == 0`."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

FILENAME = "fill-plan.prom"


def previous_success(path: Path) -> float:
    """The last successful run's time from the file the previous run wrote (0 if none)."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith("fill_plan_last_success_timestamp_seconds "):
                return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def write(path: Path, ok: bool, duration_s: float, summary: Mapping[str, Any], now: float | None = None) -> None:
    """The run's gauges into `path` (its directory must exist)."""
    now = time.time() if now is None else now
    reg = CollectorRegistry()

    def gauge(name: str, doc: str, value: float, **labels: str) -> None:
        g = Gauge(name, doc, list(labels), registry=reg)
        (g.labels(**labels) if labels else g).set(value)

    gauge("fill_plan_ok", "1 if the last run wrote a plan, 0 if it failed (the plan in force stays).", 1 if ok else 0)
    gauge("fill_plan_last_run_timestamp_seconds", "When the last run ended.", now)
    gauge("fill_plan_last_success_timestamp_seconds", "When a run last wrote a plan.",
          now if ok else previous_success(path))
    gauge("fill_plan_duration_seconds", "How long the last run took.", duration_s)
    planned = summary.get("planned", {})
    gauge("fill_plan_appliances", "Appliances with a manifest in the last plan.", planned.get("appliances", 0))
    gauge("fill_plan_files", "Manifest entries in the last plan (a file on two appliances counts twice).",
          planned.get("files", 0))
    gauge("fill_plan_bytes", "Bytes the last plan places, summed over appliances.", planned.get("bytes", 0))
    replicas = Gauge("fill_plan_replicas_failed", "Replicas that did not answer (or answered garbage), by what was asked.",
                     ["input"], registry=reg)
    replicas.labels(input="fleet-state").set(len(summary.get("steering", {}).get("failed", {})))
    replicas.labels(input="demand").set(len(summary.get("demand", {}).get("failed", {})))
    gauge("fill_plan_catalog_skipped", "Catalog entries that did not parse and were left out.",
          len(summary.get("catalog", {}).get("skipped", [])))
    gauge("fill_plan_demand_unknown_regions", "Demand regions no cluster belongs to (check [regions]).",
          len(summary.get("demand", {}).get("unknown_regions", [])))
    write_to_textfile(str(path), reg)
