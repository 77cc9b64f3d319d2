"""The lab's Prometheus: which daemons it scrapes, its prometheus.yml, and the commands that run it.

Strategy. `targets(endpoints)` turns the lab's endpoints (what lab.json lists) into scrape targets,
one job per kind of daemon, each target labelled with the lab's name for it (`daemon`); the
appliances' targets (their admin ports) also carry `appliance` and `site`, the labels the fleet
page's charts group by (playback/core/charts.py). So do the `node` job's: beside each appliance, as
on an appliance host, a node_exporter with only its textfile collector reads the fill agent's
fill-metrics.prom (the agent is a one-shot process nothing can scrape). `prometheus_yml` renders
the targets — block YAML whose every scalar is a JSON string, so no value can break the document.
The commands are Debian's /usr/bin/prometheus (storage under the lab's state directory) and
prometheus-node-exporter, on loopback ports. Every /metrics in the system is open (counts only), so
no scrape needs a credential; a target that someday does gets `authorization: {credentials_file}`
through `Target.token_file`. In an https lab (`--https`) the origin, steering and playback are scraped over HTTPS,
verifying the lab CA's certificates (`Target.ca_file`). Pure apart from `binary()`;
tests/ops/test_lab_prometheus.py checks the file with `promtool check config` and a real lab's targets.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

SCRAPE_INTERVAL_S = 2.0
RETENTION = "7d"  # the lab's history survives restarts of the lab (its state directory keeps it)


@dataclass(frozen=True)
class Target:
    job: str  # oca, steering, origin, playback, prometheus
    daemon: str  # the lab's name for it: lab-a1, steering-2, ...
    address: str  # host:port
    labels: Mapping[str, str] = field(default_factory=dict)
    token_file: str | None = None  # a bearer token for /metrics, if it ever needs one
    ca_file: str | None = None  # scraped over HTTPS, trusting this CA; None: plain HTTP


def _address(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


def site_of(appliance: str) -> str:
    """The lab names appliances <site><n>: lab-a1 is in lab-a."""
    return appliance.rstrip("0123456789")


def targets(endpoints: Mapping[str, Any], prometheus_address: str | None = None) -> list[Target]:
    """Every daemon the endpoints name (those started so far), and Prometheus itself."""
    ca = (endpoints.get("tls") or {}).get("ca")

    def ca_for(url: str) -> str | None:  # an https endpoint is the lab CA's
        return ca if urlsplit(url).scheme == "https" else None

    out: list[Target] = []
    if endpoints.get("origin"):
        out.append(Target("origin", "origin", _address(endpoints["origin"]), ca_file=ca_for(endpoints["origin"])))
    for name, url in endpoints.get("steering_replicas", {}).items():
        out.append(Target("steering", name, _address(url), ca_file=ca_for(url)))
    for name, info in endpoints.get("appliances", {}).items():
        out.append(Target("oca", name, _address(info["admin"]), {"appliance": name, "site": site_of(name)}))
    for name, url in endpoints.get("fill_exporters", {}).items():
        out.append(Target("node", f"node-{name}", _address(url), {"appliance": name, "site": site_of(name)}))
    if endpoints.get("playback"):
        url = endpoints["playback"]
        out.append(Target("playback", "playback", _address(url), ca_file=ca_for(url)))
    if prometheus_address:
        out.append(Target("prometheus", "prometheus", prometheus_address))
    return out


def _q(value: object) -> str:
    return json.dumps(str(value))


def prometheus_yml(found: list[Target], interval_s: float = SCRAPE_INTERVAL_S) -> str:
    interval = f"{interval_s:g}s"
    lines = ["# The lab's Prometheus: every daemon of the lab (scripts/labprom.py writes this file).",
             "global:", f"  scrape_interval: {_q(interval)}", f"  scrape_timeout: {_q(interval)}",
             f"  evaluation_interval: {_q(interval)}", "scrape_configs:"]
    jobs: dict[str, list[Target]] = {}
    for t in found:
        jobs.setdefault(t.job, []).append(t)
    for job, members in jobs.items():
        lines += [f"  - job_name: {_q(job)}", '    metrics_path: "/metrics"']
        tokens = {t.token_file for t in members}
        if len(tokens) != 1:
            raise ValueError(f"job {job}: one token file for all its targets, or none")
        if (token := tokens.pop()) is not None:
            lines += ["    authorization:", '      type: "Bearer"', f"      credentials_file: {_q(token)}"]
        cas = {t.ca_file for t in members}
        if len(cas) != 1:
            raise ValueError(f"job {job}: all its targets over HTTPS with one CA file, or all over HTTP")
        if (ca_file := cas.pop()) is not None:
            lines += ['    scheme: "https"', "    tls_config:", f"      ca_file: {_q(ca_file)}"]
        lines.append("    static_configs:")
        for t in members:
            lines += [f"      - targets: [{_q(t.address)}]", "        labels:", f"          daemon: {_q(t.daemon)}"]
            lines += [f"          {key}: {_q(value)}" for key, value in sorted(t.labels.items())]
    return "\n".join(lines) + "\n"


def binary(name: str = "prometheus") -> str | None:
    """Debian's prometheus or prometheus-node-exporter (scripts/setup installs both), or None."""
    return shutil.which(name)


def command(prometheus: str, state: Path, port: int) -> list[str]:
    return [prometheus, f"--config.file={state / 'prometheus.yml'}",
            f"--storage.tsdb.path={state / 'prometheus-data'}", f"--storage.tsdb.retention.time={RETENTION}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.format=json"]


def node_exporter_command(node_exporter: str, textfiles: Path, port: int) -> list[str]:
    """Only the textfile collector (the fill agent's fill-metrics.prom), no host metrics."""
    return [node_exporter, "--collector.disable-defaults", "--collector.textfile",
            f"--collector.textfile.directory={textfiles}", "--web.disable-exporter-metrics",
            f"--web.listen-address=127.0.0.1:{port}", "--log.format=json"]
