"""The agent's event log: one JSON line per event on stdout (as the appliance's daemon logs), so
journald or a file keeps a machine-readable record of every run."""
from __future__ import annotations

import json
import sys
import time
from typing import Any

QUIET = False


def log(event: str, **fields: Any) -> None:
    if not QUIET:
        print(json.dumps({"ts": round(time.time(), 3), "event": event, "worker": "fill", **fields}, default=str),
              file=sys.stdout, flush=True)
