"""Worker counters in shared memory, summed by the supervisor into Prometheus text.

Each serving worker owns one slot of float64s in a file-backed mmap and is its only writer, so the
hot path pays one array store per counter and no lock; the supervisor reads every slot when
scraped. Aligned 8-byte stores are atomic on the platforms we run on, so a scrape never sees a torn
value, only one a few microseconds old.
"""
from __future__ import annotations

import mmap
from bisect import bisect_left
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

STATUSES = (200, 204, 206, 304, 400, 403, 404, 405, 408, 413, 414, 416, 431, 500, 501, 503, 505)
TOKEN_REASONS = ("token-missing", "token-malformed", "token-expired", "unknown-key", "bad-signature",
                 "wrong-client", "wrong-scope")
TIERS = ("ssd", "hdd")
TLS_OUTCOMES = ("ok", "plain_http", "timeout", "unknown_sni", "reset", "failed")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _names() -> list[str]:
    names = [f"status_{s}" for s in STATUSES] + ["status_other"]
    names += [f"bytes_{t}" for t in TIERS] + ["bytes_other"]
    names += [f"token_{r}" for r in TOKEN_REASONS]
    names += [f"latency_le_{i}" for i in range(len(LATENCY_BUCKETS))]
    names += ["latency_sum", "latency_count", "hits", "misses", "open_connections",
              "connections_total", "disk_errors", "client_aborts", "timeouts", "worker_task_failures"]
    names += ["access_log_dropped_lines", "access_log_dropped_bytes", "access_log_failing"]
    names += [f"tls_{o}" for o in TLS_OUTCOMES]  # handshakes by outcome (oca.core.tls.HandshakeOutcome)
    return names


NAMES = tuple(_names())
INDEX = {name: i for i, name in enumerate(NAMES)}
SLOT_BYTES = len(NAMES) * 8
_STATUS_INDEX = {s: INDEX[f"status_{s}"] for s in STATUSES}
_TOKEN_INDEX = {r: INDEX[f"token_{r}"] for r in TOKEN_REASONS}
_TIER_INDEX = {t: INDEX[f"bytes_{t}"] for t in TIERS}
_HITS = INDEX["hits"]
_STATUS_OTHER = INDEX["status_other"]
_BYTES_OTHER = INDEX["bytes_other"]
_NBUCKETS = len(LATENCY_BUCKETS)
_FIRST_BOUND = LATENCY_BUCKETS[0]
_LATENCY_FIRST, _LATENCY_SUM, _LATENCY_COUNT = INDEX["latency_le_0"], INDEX["latency_sum"], INDEX["latency_count"]


def create_file(path: Path, slots: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(SLOT_BYTES * slots)


def _map(path: Path) -> mmap.mmap:
    fd = os.open(path, os.O_RDWR)
    try:
        return mmap.mmap(fd, 0)
    finally:
        os.close(fd)


class WorkerMetrics:
    """One worker's slot. Methods are tiny on purpose: they run per request."""

    def __init__(self, path: Path | None, slot: int) -> None:
        if path is None:  # tests and one-off tools: private memory, same code path
            self._mm = mmap.mmap(-1, SLOT_BYTES)
            self.v = memoryview(self._mm).cast("d")
        else:
            self._mm = _map(path)
            self.v = memoryview(self._mm)[slot * SLOT_BYTES:(slot + 1) * SLOT_BYTES].cast("d")
        self.v[INDEX["open_connections"]] = 0
        self.v[INDEX["access_log_failing"]] = 0  # gauges start at zero in a reused slot

    def token_refused(self, reason: str) -> None:
        i = _TOKEN_INDEX.get(reason)
        if i is not None:
            self.v[i] += 1

    def sent(self, tier: str, nbytes: int) -> None:
        self.v[_TIER_INDEX.get(tier, _BYTES_OTHER)] += nbytes

    def response(self, status: int, seconds: float) -> None:
        """One response sent: its status and its latency."""
        v = self.v
        v[_STATUS_INDEX.get(status, _STATUS_OTHER)] += 1
        # Most responses take well under the first bound (0.5 ms): no bisect for them.
        bucket = 0 if seconds <= _FIRST_BOUND else bisect_left(LATENCY_BUCKETS, seconds)
        if bucket < _NBUCKETS:
            v[_LATENCY_FIRST + bucket] += 1
        v[_LATENCY_SUM] += seconds
        v[_LATENCY_COUNT] += 1

    def served(self, status: int, tier: str, nbytes: int, seconds: float) -> None:
        """A hit answered whole from a file: `hit()`, `sent()` and `response()` in one call, the
        hot path's only one per response."""
        v = self.v
        v[_HITS] += 1
        if nbytes:
            v[_TIER_INDEX.get(tier, _BYTES_OTHER)] += nbytes
        v[_STATUS_INDEX.get(status, _STATUS_OTHER)] += 1
        if seconds <= _FIRST_BOUND:
            v[_LATENCY_FIRST] += 1
        else:
            bucket = bisect_left(LATENCY_BUCKETS, seconds)
            if bucket < _NBUCKETS:
                v[_LATENCY_FIRST + bucket] += 1
        v[_LATENCY_SUM] += seconds
        v[_LATENCY_COUNT] += 1

    def hit(self) -> None:
        self.v[_HITS] += 1

    def add(self, name: str, amount: float = 1) -> None:
        self.v[INDEX[name]] += amount


def read_totals(path: Path, slots: int) -> dict[str, float]:
    """Sum every worker's slot (the supervisor's view)."""
    totals = dict.fromkeys(NAMES, 0.0)
    try:
        mm = _map(path)
    except OSError:
        return totals
    with mm:
        view = memoryview(mm).cast("d")
        per = len(NAMES)
        for slot in range(min(slots, len(view) // per)):
            for i, name in enumerate(NAMES):
                totals[name] += view[slot * per + i]
        view.release()
    return totals


class SharedCounters:
    """prometheus-client's view of the workers' shared-memory counters (summed by `read_totals` at
    scrape time) and the supervisor's own gauges (name, help, labels, value): a custom collector, so
    the hot path keeps its plain float slots and the library does the exposition and escaping."""

    def __init__(self, totals: dict[str, float], gauges: Iterable[tuple[str, str, dict[str, str], float]],
                 tls: bool = False) -> None:
        self.totals, self.gauges, self.tls = totals, list(gauges), tls

    def collect(self) -> Iterator[Metric]:
        t = self.totals
        yield _labelled(CounterMetricFamily("oca_requests", "Responses by HTTP status.", labels=["status"]),
                        [((s,), t[f"status_{s}"]) for s in STATUSES] + [(("other",), t["status_other"])])
        yield _labelled(CounterMetricFamily("oca_bytes_sent", "Body bytes sent, by the tier they were read from.",
                                            labels=["tier"]), [((x,), t[f"bytes_{x}"]) for x in TIERS])
        yield _labelled(CounterMetricFamily("oca_token_refusals", "Requests refused for their token, by reason.",
                                            labels=["reason"]), [((r,), t[f"token_{r}"]) for r in TOKEN_REASONS])
        yield _labelled(CounterMetricFamily("oca_cache_lookups", "Signed requests for a file held (hit) or not (miss).",
                                            labels=["result"]), [(("hit",), t["hits"]), (("miss",), t["misses"])])
        cumulative, buckets = 0.0, []
        for i, bound in enumerate(LATENCY_BUCKETS):
            cumulative += t[f"latency_le_{i}"]
            buckets.append((str(bound), cumulative))
        buckets.append(("+Inf", t["latency_count"]))
        yield HistogramMetricFamily("oca_request_duration_seconds",
                                    "From request parsed to last byte handed to the kernel.",
                                    buckets=buckets, sum_value=t["latency_sum"])
        for name, kind, help_text in _PLAIN:
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(f"oca_{name}", help_text)
            family.add_metric([], t[name])
            yield family
        if self.tls:
            yield _labelled(CounterMetricFamily("oca_tls_handshakes",
                                                "TLS handshakes by outcome (ok, or why the connection was closed).",
                                                labels=["outcome"]),
                            [((o,), t.get("tls_" + o, 0.0)) for o in TLS_OUTCOMES])
        families: dict[str, GaugeMetricFamily] = {}
        for name, help_text, labels, value in self.gauges:
            g = families.get(name)
            if g is None:
                g = families[name] = GaugeMetricFamily(name, help_text, labels=sorted(labels))
            g.add_metric([str(labels[k]) for k in sorted(labels)], float(value))
        yield from families.values()


_PLAIN = (
    ("open_connections", "gauge", "Client connections open now."),
    ("connections_total", "counter", "Client connections accepted."),
    ("disk_errors", "counter", "Read errors that failed a disk."),
    ("client_aborts", "counter", "Responses cut short by the client going away."),
    ("timeouts", "counter", "Connections closed for a header, idle or send timeout."),
    ("worker_task_failures", "counter", "Serving workers' background task failures (logged, restarted)."),
    ("access_log_dropped_lines", "counter", "Access log lines lost to a failing write (a full log disk); "
                                            "serving goes on."),
    ("access_log_dropped_bytes", "counter", "Access log bytes lost to a failing write."),
    ("access_log_failing", "gauge", "Serving workers whose last access log write failed."),
)


def _labelled(family: Any, values: list[tuple[tuple[Any, ...], float]]) -> Any:
    for labels, value in values:
        family.add_metric([str(x) for x in labels], value)
    return family
