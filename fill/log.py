"""The planner's event log: one JSON line per event on stdout, in the envelope every daemon uses
(contracts.logs: `ts`, `level`, `service` = "fill-plan", `event`, then the fields), so journald keeps
a machine-readable record of every run. Written directly: a run is a short command whose every line
is an event; the last line is the run's summary (`plan-done` or `plan-failed`)."""
from __future__ import annotations

import sys
from typing import Any

from contracts.logs import json_line

QUIET = False


def log(event: str, **fields: Any) -> None:
    if not QUIET:
        print(json_line("fill-plan", event, **fields), file=sys.stdout, flush=True)
