"""One log format for every daemon and CLI: one JSON object per line with the same field names
everywhere — `ts` (unix seconds), `level`, `service`, `logger`, `event` (a short kebab-case name or
the message), the record's `fields` (passed as `extra={"fields": {...}}`), and `traceback` when an
exception is attached. Nothing is printed bare: a daemon calls `setup_logging` once at start, and
every library logger (aiohttp's, boto3's, ours) goes through the same handler.

The appliance's access log is not written through here: its hot path formats its own lines
(oca/http/state.py), with the same `ts`/`event` names, because a logging call per response costs
more than the response itself.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

_RESERVED = frozenset(("ts", "level", "service", "logger", "event"))


class JsonFormatter(logging.Formatter):
    """A record as one JSON line; `service` names the daemon the line came from."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                               "service": self.service, "logger": record.name, "event": record.getMessage()}
        fields = getattr(record, "fields", None)
        if fields:
            for key, value in fields.items():  # a field never overwrites the envelope
                out[f"field_{key}" if key in _RESERVED else key] = value
        if record.exc_info:
            out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"), default=str)


def setup_logging(service: str, level: str = "info", stream: IO[str] | None = None) -> None:
    """Route every logger to one JSON-lines handler (stdout by default: journald keeps it)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """`log_event(log, "worker-restart", slot=1)`: an event name plus fields, as one line."""
    logger.log(level, event, extra={"fields": fields})


def json_line(service: str, event: str, **fields: Any) -> str:
    """The same line shape for code that writes its own stream (a worker before logging is set up)."""
    out = {"ts": round(time.time(), 3), "level": "info", "service": service, "event": event}
    out.update({f"field_{k}" if k in _RESERVED else k: v for k, v in fields.items()})
    return json.dumps(out, separators=(",", ":"), default=str)


__all__ = ["JsonFormatter", "setup_logging", "log_event", "json_line"]
