"""`steering serve -c FILE` and `steering check-config -c FILE`."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from contracts.tomlconf import ConfigError
from steering import config as steering_config
from steering.service import load_all


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg and the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
               "msg": record.getMessage()}
        fields = getattr(record, "fields", None)
        if fields:
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"), default=str)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="steering", description="CDN steering service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the steering HTTP service")
    serve.add_argument("-c", "--config", type=Path, required=True)
    serve.add_argument("--log-level", default="info")
    check = sub.add_parser("check-config", help="validate the config and every file it names")
    check.add_argument("-c", "--config", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "check-config":
        return check_config(args.config)
    return run(args.config, args.log_level)


def check_config(path: Path) -> int:
    started = time.monotonic()
    try:
        config = steering_config.load(path)
        loaded = load_all(config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    fleet = loaded.fleet
    print(f"ok: {path}")
    print(f"  fleet: {config.fleet_file}: {len(fleet.sites)} sites, {len(fleet.appliances)} appliances, "
          f"{len(fleet.prefixes)} prefixes")
    print(f"  keys: {config.key_file}: {', '.join(sorted(loaded.keys.keys))} (signing {loaded.keys.signing_id})")
    print(f"  geoip: {loaded.geo.path}: {loaded.geo.description}" if loaded.geo else "  geoip: none")
    print(f"  default site: {config.default_site}; loaded in {time.monotonic() - started:.2f} s")
    return 0


def run(path: Path, log_level: str) -> int:
    setup_logging(log_level)
    try:
        config = steering_config.load(path)
        loaded = load_all(config)
    except ConfigError as exc:
        logging.getLogger("steering").error("config error: %s", exc)
        return 2
    from steering.server import serve  # aiohttp only for the command that serves

    main_task = serve(config, loaded, config.source, ready=lambda port: print(f"listening {port}", flush=True))
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay correct without it
        asyncio.run(main_task)
    else:
        uvloop.run(main_task)
    return 0


if __name__ == "__main__":
    sys.exit(main())
