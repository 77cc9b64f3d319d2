"""oca.metrics: the hot path's one call per response (`served`) counts exactly what the general
path's three (`hit`, `sent`, `response`) do, its shortcut for sub-millisecond latencies included,
and the histogram renders as Prometheus expects (buckets cumulative, +Inf = count)."""
from __future__ import annotations

import pytest

from prometheus_client import CollectorRegistry, generate_latest

from oca.metrics import INDEX, LATENCY_BUCKETS, NAMES, SharedCounters, WorkerMetrics
from tests.support.prom import types, value


def _values(m: WorkerMetrics) -> dict[str, float]:
    return {name: m.v[i] for i, name in enumerate(NAMES)}


@pytest.mark.parametrize("status, tier, nbytes, seconds", [
    (206, "ssd", 16384, 0.00002),
    (206, "ssd", 16384, 0.0),
    (200, "hdd", 4 << 20, LATENCY_BUCKETS[0]),  # on the first bound: le="0.0005" holds it
    (206, "ssd", 1, 0.0005001),  # just past it: the second bucket
    (206, "ssd", 1, 0.003),
    (299, "nvme", 10, 0.2),  # an unknown status and tier: "other"
    (200, "ssd", 0, 0.0001),  # an empty body adds no bytes
    (206, "hdd", 5, 20.0),  # past the last bound: only +Inf (the count)
], ids=["fast", "zero", "first-bound", "past-first-bound", "ms", "other", "empty", "past-last"])
def test_served_counts_what_hit_sent_and_response_count(status: int, tier: str, nbytes: int, seconds: float) -> None:
    one, three = WorkerMetrics(None, 0), WorkerMetrics(None, 0)
    for _ in range(2):
        one.served(status, tier, nbytes, seconds)
        three.hit()
        if nbytes:
            three.sent(tier, nbytes)
        three.response(status, seconds)
    assert _values(one) == _values(three)
    assert one.v[INDEX["hits"]] == 2 and one.v[INDEX["latency_count"]] == 2


def test_latency_buckets_render_cumulative() -> None:
    m = WorkerMetrics(None, 0)
    for seconds in (0.0001, 0.0005, 0.0007, 0.003, 30.0):
        m.served(206, "ssd", 1, seconds)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SharedCounters(_values(m), [("oca_disk_up", "1 when up.", {"disk": '/d"0', "tier": "ssd"}, 1)]))
    text = generate_latest(registry).decode()
    bucket = "oca_request_duration_seconds_bucket"
    assert [value(text, bucket, le=le) for le in ("0.0005", "0.001", "0.005", "10.0", "+Inf")] == [2, 3, 4, 4, 5]
    assert value(text, "oca_request_duration_seconds_count") == 5
    assert value(text, "oca_cache_lookups_total", result="hit") == 5
    assert value(text, "oca_disk_up", disk='/d"0', tier="ssd") == 1  # label escaping by the library
    kinds = types(text)
    assert kinds["oca_request_duration_seconds"] == "histogram" and kinds["oca_requests"] == "counter"
    assert kinds["oca_open_connections"] == "gauge"
