"""The fill agent's textfile (oca.fill.metrics): what node_exporter's textfile collector reads."""
from __future__ import annotations

from pathlib import Path

import pytest

from oca.fill.metrics import SERIES, FillMetrics
from tests.support.prom import samples, types, value


def test_the_textfile_parses_with_every_counter_typed_and_only_the_gauges_reached(tmp_path: Path) -> None:
    path = tmp_path / "fill-metrics.prom"
    m = FillMetrics(path)
    m.inc("fill_bytes_downloaded_total", 100, kind="peer")
    m.inc("fill_bytes_downloaded_total", 50, kind="peer")  # the memoised child
    m.inc("fill_bytes_downloaded_total", 7, kind="origin")
    m.inc("fill_source_errors_total", kind="peer", fault="host")
    m.inc("fill_source_errors_total", fault="host", kind="peer")  # label order does not matter
    m.inc("fill_files_deleted_total", 3)
    m.set("fill_manifest_files", 12)
    m.write()
    text = path.read_text()
    assert not list(tmp_path.glob("*.prom.*"))  # written beside it, then renamed over it
    got = samples(text)
    assert value(got, "fill_bytes_downloaded_total", kind="peer") == 150
    assert value(got, "fill_bytes_downloaded_total", kind="origin") == 7
    assert value(got, "fill_source_errors_total", kind="peer", fault="host") == 2
    assert value(got, "fill_files_deleted_total") == 3 and value(got, "fill_resumed_bytes_total") == 0
    assert value(got, "fill_manifest_files") == 12 and value(got, "fill_manifest_refused") == 0
    assert value(got, "fill_run_end_timestamp_seconds") == 0 and value(got, "fill_run_start_timestamp_seconds") > 0
    assert value(got, "fill_missing_files") is None  # not reached yet: absent, not 0
    kinds = types(text)
    assert {n.removesuffix("_total"): k for n, (k, _, _) in SERIES.items() if k == "counter"}.items() <= kinds.items()
    assert kinds["fill_manifest_files"] == "gauge"


def test_get_reads_one_series_or_sums_them() -> None:
    m = FillMetrics(None)
    m.inc("fill_files_published_total", kind="peer")
    m.inc("fill_files_published_total", kind="peer")
    m.inc("fill_files_published_total", kind="origin")
    m.set("fill_complete", 1)
    assert m.get("fill_files_published_total", kind="peer") == 2
    assert m.get("fill_files_published_total") == 3
    assert m.get("fill_escalations_total") == 0 and m.get("fill_missing_bytes") == 0
    assert m.get("fill_complete") == 1
    summary = m.summary()
    assert summary['fill_files_published_total{kind=peer}'] == 2 and summary["fill_complete"] == 1
    assert "fill_escalations_total" not in summary and "fill_files_deleted_total" not in summary  # zeros left out


def test_label_values_are_escaped_by_the_library() -> None:
    m = FillMetrics(None)
    odd = 'a "quoted"\\back\nslash'
    m.inc("fill_files_failed_total", reason=odd)
    assert value(m.render(), "fill_files_failed_total", reason=odd) == 1


@pytest.mark.parametrize("call", [
    lambda m: m.inc("fill_bytes_downloaded", 1, kind="peer"),  # misspelt name
    lambda m: m.inc("fill_bytes_downloaded_total", 1, source="peer"),  # a label it does not have
    lambda m: m.set("fill_files_deleted_total", 1),  # a counter is not set
], ids=["unknown-name", "unknown-label", "set-a-counter"])
def test_a_mistake_fails_loudly(call) -> None:
    with pytest.raises((KeyError, ValueError)):
        call(FillMetrics(None))
