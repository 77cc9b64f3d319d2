"""What a fill run counts, written as a Prometheus textfile (node_exporter's textfile collector picks
it up; the agent is a one-shot process, so nothing scrapes it directly) every few seconds and at exit,
plus a progress bar when stderr is a terminal."""
from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from oca.fill.state import write_atomic

_HELP = {
    "fill_bytes_downloaded_total": ("counter", "Bytes received, by source kind."),
    "fill_files_published_total": ("counter", "Files verified and published, by source kind."),
    "fill_files_failed_total": ("counter", "Files given up on this run, by reason."),
    "fill_hash_mismatches_total": ("counter", "Downloads refused by the xxh3-128 check (quarantined), by source kind."),
    "fill_source_errors_total": ("counter", "Fetch failures, by source kind and fault."),
    "fill_files_deferred_total": ("counter", "Files left for the next run, by reason."),
    "fill_source_waits_total": ("counter", "Times a peer still filling a file said 'not yet' and was waited for."),
    "fill_escalations_total": ("counter", "Files that gave up waiting for a peer filling them and moved on."),
    "fill_files_deleted_total": ("counter", "Files deleted because they left the manifest."),
    "fill_resumed_bytes_total": ("counter", "Bytes of partial downloads reused instead of fetched again."),
    "fill_manifest_refused": ("gauge", "1 when this run refused the manifest (the current set is kept)."),
    "fill_manifest_files": ("gauge", "Files in the manifest."),
    "fill_manifest_bytes": ("gauge", "Bytes in the manifest."),
    "fill_missing_files": ("gauge", "Manifest files not in place yet."),
    "fill_missing_bytes": ("gauge", "Bytes of manifest files not in place yet."),
    "fill_rate_limit_bits_per_second": ("gauge", "The bandwidth cap in force (after yielding to serving)."),
    "fill_run_start_timestamp_seconds": ("gauge", "When this run started."),
    "fill_run_end_timestamp_seconds": ("gauge", "When this run ended (0 while running)."),
    "fill_complete": ("gauge", "1 when every manifest file is in place."),
}


class Metrics:
    def __init__(self, path: Path | None, progress: bool = False) -> None:
        self.path = path
        self.counters: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self.gauges: dict[str, float] = {"fill_run_start_timestamp_seconds": round(time.time(), 3),
                                         "fill_run_end_timestamp_seconds": 0.0, "fill_manifest_refused": 0.0}
        self._bar: Any = None
        self._progress = progress and sys.stderr.isatty()

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        self.counters[(name, tuple(sorted(labels.items())))] += amount

    def get(self, name: str, **labels: str) -> float:
        if not labels:
            return sum(v for (n, _), v in self.counters.items() if n == name) or self.gauges.get(name, 0.0)
        return self.counters.get((name, tuple(sorted(labels.items()))), 0)

    def set(self, name: str, value: float) -> None:
        self.gauges[name] = value

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
        lines: list[str] = []
        names = sorted({n for n, _ in self.counters} | set(self.gauges))
        for name in names:
            kind, text = _HELP.get(name, ("gauge", name))
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            if name in self.gauges:
                lines.append(f"{name} {_num(self.gauges[name])}")
            for (n, labels), value in sorted(self.counters.items()):
                if n == name:
                    inner = ",".join(f'{k}="{v}"' for k, v in labels)
                    lines.append(f"{name}{{{inner}}} {_num(value)}" if inner else f"{name} {_num(value)}")
        return "\n".join(lines) + "\n"

    def write(self) -> None:
        if self.path is not None:
            write_atomic(self.path, self.render().encode())

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in self.gauges.items()}
        for (name, labels), value in sorted(self.counters.items()):
            key = name + ("{" + ",".join(f"{k}={v}" for k, v in labels) + "}" if labels else "")
            out[key] = value
        return out


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
