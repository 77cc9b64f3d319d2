"""The batched decision log: JSON lines in one write per flush, bounded backlog."""
from __future__ import annotations

import io
import json

from steering.decisionlog import DecisionLog


def test_lines_are_written_on_flush_as_json() -> None:
    out = io.StringIO()
    log = DecisionLog(out)
    log.add("t/a.mp4", "192.0.2.0/24", "prefix", "hit", "ams", "ams-1", 3)
    log.add("t/b.mp4", "2001:db8::/48", "geo", "content-miss", "fra", None, 0)
    assert out.getvalue() == ""
    log.flush()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(d["file"], d["method"], d["outcome"], d["first"]) for d in lines] == [
        ("t/a.mp4", "prefix", "hit", "ams-1"), ("t/b.mp4", "geo", "content-miss", None)]
    assert lines[0]["logger"] == "steering.decisions" and lines[0]["event"] == "steer"
    assert lines[0]["service"] == "steering" and lines[0]["level"] == "info"
    log.flush()
    assert len(out.getvalue().splitlines()) == 2


def test_backlog_is_bounded_and_write_errors_are_counted() -> None:
    out = io.StringIO()
    log = DecisionLog(out, max_pending=2)
    for _ in range(5):
        log.add("t/a.mp4", "p", "default", "hit", "s", "a", 1)
    assert log.dropped == 3
    out.close()
    log.flush()  # a closed stream: counted, not raised
    assert log.dropped == 5
