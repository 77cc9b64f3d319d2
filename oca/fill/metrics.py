"""What a fill run counts, written as a Prometheus textfile every few seconds and at exit, plus a
progress bar when stderr is a terminal.

The agent is a one-shot process, so nothing scrapes it: node_exporter's textfile collector reads the
file (`write_to_textfile`: written beside it, then renamed over it). The run has a CollectorRegistry
of its own. Counters are prometheus-client Counters, declared with their labels in SERIES, so a
misspelt name or label fails loudly; the children are memoised per label values, since
`fill_bytes_downloaded_total` counts every chunk received. Gauges are the values set so far, read at
write time by a collector: a gauge the run has not reached yet (`fill_missing_files` before the
manifest is read) is absent, not a misleading 0.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest, write_to_textfile
from prometheus_client.core import GaugeMetricFamily, Metric

# name -> (type, help, label names)
SERIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "fill_bytes_downloaded_total": ("counter", "Bytes received, by source kind.", ("kind",)),
    "fill_files_published_total": ("counter", "Files verified and published, by source kind.", ("kind",)),
    "fill_files_failed_total": ("counter", "Files given up on this run, by reason.", ("reason",)),
    "fill_hash_mismatches_total": ("counter", "Downloads refused by the xxh3-128 check (quarantined), by source "
                                   "kind.", ("kind",)),
    "fill_source_errors_total": ("counter", "Fetch failures, by source kind and fault.", ("kind", "fault")),
    "fill_files_deferred_total": ("counter", "Files left for the next run, by reason.", ("reason",)),
    "fill_source_waits_total": ("counter", "Times a peer still filling a file said 'not yet' and was waited for.",
                                ("kind",)),
    "fill_escalations_total": ("counter", "Files that gave up waiting for a peer filling them and moved on.",
                               ("kind",)),
    "fill_files_deleted_total": ("counter", "Files deleted because they left the manifest.", ()),
    "fill_resumed_bytes_total": ("counter", "Bytes of partial downloads reused instead of fetched again.", ()),
    "fill_manifest_refused": ("gauge", "1 when this run refused the manifest (the current set is kept).", ()),
    "fill_manifest_files": ("gauge", "Files in the manifest.", ()),
    "fill_manifest_bytes": ("gauge", "Bytes in the manifest.", ()),
    "fill_missing_files": ("gauge", "Manifest files not in place yet.", ()),
    "fill_missing_bytes": ("gauge", "Bytes of manifest files not in place yet.", ()),
    "fill_rate_limit_bits_per_second": ("gauge", "The bandwidth cap in force (after yielding to serving).", ()),
    "fill_run_start_timestamp_seconds": ("gauge", "When this run started.", ()),
    "fill_run_end_timestamp_seconds": ("gauge", "When this run ended (0 while running).", ()),
    "fill_complete": ("gauge", "1 when every manifest file is in place.", ()),
}


class FillMetrics:
    def __init__(self, path: Path | None, progress: bool = False) -> None:
        self.path = path  # the textfile (None: nothing written)
        self.registry = CollectorRegistry()
        self.counters: dict[str, Counter] = {
            name: Counter(name, text, labels, registry=self.registry)
            for name, (kind, text, labels) in SERIES.items() if kind == "counter"}
        self._children: dict[tuple[Any, ...], Any] = {}  # (name, *label items) -> the Counter's child
        self.gauges: dict[str, float] = {"fill_run_start_timestamp_seconds": round(time.time(), 3),
                                         "fill_run_end_timestamp_seconds": 0.0, "fill_manifest_refused": 0.0}
        self.registry.register(_GaugeCollector(self.gauges))
        self._bar: Any = None
        self._progress = progress and sys.stderr.isatty()

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        key = (name, *labels.items())
        child = self._children.get(key)
        if child is None:
            counter = self.counters[name]
            child = self._children[key] = counter.labels(**labels) if labels else counter
        child.inc(amount)

    def set(self, name: str, value: float) -> None:
        if SERIES[name][0] != "gauge":
            raise KeyError(f"{name}: not a gauge")
        self.gauges[name] = value

    def get(self, name: str, **labels: str) -> float:
        """A gauge's value, or a counter's summed over the series whose labels include `labels` (0 if none)."""
        if name not in self.counters:
            return self.gauges.get(name, 0.0)
        want = labels.items()
        return sum(s.value for family in self.counters[name].collect() for s in family.samples
                   if s.name == name and want <= s.labels.items())

    # --- progress --------------------------------------------------------------------------------

    def start_progress(self, total_bytes: int, files: int) -> None:
        if self._progress and total_bytes > 0:
            from tqdm import tqdm
            self._bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                             desc=f"fill {files} files", file=sys.stderr, dynamic_ncols=True)

    def advance(self, nbytes: int) -> None:
        if self._bar is not None:
            self._bar.update(nbytes)

    def close_progress(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # --- export ----------------------------------------------------------------------------------

    def render(self) -> str:
        return generate_latest(self.registry).decode()

    def write(self) -> None:
        if self.path is not None:
            write_to_textfile(str(self.path), self.registry)

    def summary(self) -> dict[str, Any]:
        """For the run's last log line: gauges, then every counter series (`name{k=v,...}`) with a value."""
        out: dict[str, Any] = dict(self.gauges)
        for name, counter in self.counters.items():
            for family in counter.collect():
                for s in family.samples:
                    if s.name == name and s.value:
                        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                        out[name + ("{" + labels + "}" if labels else "")] = s.value
        return out


class _GaugeCollector:
    """The gauges set so far (a gauge never set is absent from the file)."""

    def __init__(self, gauges: dict[str, float]) -> None:
        self.gauges = gauges

    def collect(self) -> Iterator[Metric]:
        for name, value in sorted(self.gauges.items()):  # items() copies at once: set() runs on the loop
            yield GaugeMetricFamily(name, SERIES[name][1], value=value)
