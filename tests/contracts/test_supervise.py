"""The supervision helper: backoff decisions (pure, table-tested) and the asyncio shell — a task made
to raise is logged with its traceback, counted, restarted, reported degraded while it keeps failing,
and awaited at shutdown."""
from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest
from prometheus_client import generate_latest

from contracts.logs import JsonFormatter, json_line, setup_logging
from contracts.supervise import Backoff, TaskSupervisor


@pytest.mark.parametrize("failures, delays", [
    pytest.param(1, [0.5], id="first-failure-waits-initial"),
    pytest.param(4, [0.5, 1.0, 2.0, 4.0], id="doubles"),
    pytest.param(8, [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0], id="capped"),
])
def test_backoff_delays(failures, delays):
    b = Backoff(initial_s=0.5, max_s=10.0)
    assert [b.failed() for _ in range(failures)] == delays
    assert b.streak == failures
    b.succeeded()
    assert b.streak == 0 and b.failed() == 0.5


def _capture(logger_name: str) -> io.StringIO:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("test"))
    logger = logging.getLogger(logger_name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return out


def test_a_failing_chore_is_logged_counted_restarted_and_degrades():
    out = _capture("t.sup1")

    async def main():
        sup = TaskSupervisor("demo", logging.getLogger("t.sup1"), backoff_initial_s=0.01, backoff_max_s=0.05,
                             degraded_after=3)
        runs = []

        async def chore():
            runs.append(1)
            if len(runs) <= 4:
                raise RuntimeError(f"boom {len(runs)}")
            await asyncio.sleep(3600)

        sup.spawn("flaky", chore)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if len(runs) >= 3 and sup.degraded():
                break
        assert sup.degraded() == ["flaky"], "three failures in a row: degraded"
        for _ in range(200):
            await asyncio.sleep(0.01)
            if len(runs) >= 5:
                break
        assert len(runs) == 5, "restarted after every failure"
        st = sup.status()[0]
        assert st["failures"] == 4 and st["restarts"] == 4 and st["state"] == "running"
        assert st["last_error"] == "RuntimeError: boom 4"
        text = generate_latest(sup.registry).decode()
        assert 'demo_task_failures_total{task="flaky"} 4.0' in text
        assert 'demo_task_restarts_total{task="flaky"} 4.0' in text
        assert 'demo_task_up{task="flaky"} 1.0' in text
        await sup.shutdown()
        assert sup.status()[0]["state"] == "stopped"

    asyncio.run(main())
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["task-failed"] * 4
    assert lines[0]["task"] == "flaky" and lines[0]["level"] == "error"
    assert "RuntimeError: boom 1" in lines[0]["traceback"] and "Traceback" in lines[0]["traceback"]


def test_every_step_success_clears_degraded():
    async def main():
        sup = TaskSupervisor("demo", logging.getLogger("t.sup2"), backoff_initial_s=0.01, backoff_max_s=0.02,
                             degraded_after=2)
        calls = []

        def step():
            calls.append(1)
            if len(calls) in (1, 2):
                raise OSError("transient")

        sup.every("step", 0.01, step, first_delay_s=0)
        for _ in range(300):
            await asyncio.sleep(0.01)
            if len(calls) >= 4:
                break
        assert len(calls) >= 4
        assert sup.degraded() == [], "a successful step ends the streak"
        assert sup.status()[0]["failures"] == 2
        await sup.shutdown()

    logging.getLogger("t.sup2").disabled = True
    asyncio.run(main())


def test_shutdown_awaits_cleanup_and_no_restart_after():
    async def main():
        sup = TaskSupervisor("demo", logging.getLogger("t.sup3"))
        cleaned = asyncio.Event()

        async def chore():
            try:
                await asyncio.sleep(3600)
            finally:
                await asyncio.sleep(0.01)  # cleanup that needs the loop
                cleaned.set()

        sup.spawn("c", chore)
        await asyncio.sleep(0.01)
        await sup.shutdown()
        assert cleaned.is_set(), "shutdown waited for the task's own cleanup"
        assert all(t.task.done() for t in sup.tasks.values())

    asyncio.run(main())


def test_no_restart_task_fails_for_good_and_is_degraded():
    async def main():
        sup = TaskSupervisor("demo", logging.getLogger("t.sup4"), degraded_after=5)

        async def once():
            raise ValueError("bad config")

        sup.spawn("once", once, restart=False)
        await asyncio.sleep(0.05)
        assert sup.degraded() == ["once"] and sup.status()[0]["state"] == "failed"
        await sup.shutdown()

    logging.getLogger("t.sup4").disabled = True
    asyncio.run(main())


def test_duplicate_task_name_refused():
    async def main():
        sup = TaskSupervisor("demo")
        sup.spawn("a", lambda: asyncio.sleep(10))
        with pytest.raises(ValueError, match="already supervised"):
            sup.spawn("a", lambda: asyncio.sleep(10))
        await sup.shutdown()

    asyncio.run(main())


def test_log_lines_one_shape():
    out = io.StringIO()
    setup_logging("svc", "info", stream=out)
    try:
        logging.getLogger("x.y").warning("disk-slow", extra={"fields": {"disk": "/srv/a", "event": "shadow"}})
    finally:
        logging.getLogger().handlers[:] = []
    line = json.loads(out.getvalue())
    assert line["service"] == "svc" and line["event"] == "disk-slow" and line["level"] == "warning"
    assert line["logger"] == "x.y" and line["disk"] == "/srv/a"
    assert line["field_event"] == "shadow", "a field never overwrites the envelope"
    assert set(json.loads(json_line("oca", "ready", port=1))) == {"ts", "level", "service", "event", "port"}
