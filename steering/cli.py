"""`steering serve -c FILE`, `steering check-config -c FILE`, `steering keys derive …`, `steering callers …`
and the content team's `steering withdraw …` / `steering withdrawals` (steering.withdrawcli)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from contracts.logs import log_event, setup_logging
from contracts.tlsserve import ServerTls, describe
from contracts.structconf import ConfigError
from steering import config as steering_config, keyscli, withdrawcli
from steering.service import load_all


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="steering", description="CDN steering service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the steering HTTP service")
    serve.add_argument("-c", "--config", type=Path, required=True)
    serve.add_argument("--log-level", default="info")
    check = sub.add_parser("check-config", help="validate the config and every file it names")
    check.add_argument("-c", "--config", type=Path, required=True)
    keyscli.add_parser(sub)
    keyscli.add_callers_parser(sub)
    withdrawcli.add_parsers(sub)
    args = parser.parse_args(argv)
    if args.command in ("withdraw", "withdrawals"):
        return withdrawcli.run(args)
    if args.command == "check-config":
        return check_config(args.config)
    if args.command == "keys":
        return keyscli.run(args)
    if args.command == "callers":
        return keyscli.run_callers(args)
    return run(args.config, args.log_level)


def check_config(path: Path) -> int:
    """0: all good; 1: usable, but coverage zones were skipped (each on stderr); 2: unusable."""
    started = time.monotonic()
    try:
        config = steering_config.load(path)
        loaded = load_all(config)
        listener = describe(config.tls) if config.tls is not None else "plain HTTP (no [tls])"
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    fleet, info = loaded.fleet, loaded.fleet_info
    print(f"ok: {path}")
    print(f"  fleet: {info.source}: {len(fleet.sites)} sites, {len(fleet.appliances)} appliances, "
          f"{len(fleet.prefixes)} prefixes" + (f"; revision {info.revision!r}" if info.revision is not None else "")
          + (f" ({info.customer_name})" if info.customer_name else ""))
    for line in info.warnings:
        print(f"  warning: {line}")
    for line in info.skipped:  # served without it: an error to fix, though not fatal
        print(f"error: {line}", file=sys.stderr)
    print(f"  keys: {config.key_file}: {', '.join(sorted(loaded.keys.keys))} (signing {loaded.keys.signing_id})")
    print(f"  geoip: {loaded.geo.path}: {loaded.geo.description}" if loaded.geo else "  geoip: none")
    print(f"  listener: {config.server.listen}:{config.server.port}, {listener}")
    print(f"  default site: {config.default_site}; loaded in {time.monotonic() - started:.2f} s")
    return 1 if info.skipped else 0


def run(path: Path, log_level: str) -> int:
    """Serve; every line on stdout is one JSON log event (the bound port is in `listening`)."""
    setup_logging("steering", log_level)
    try:
        config = steering_config.load(path)
        loaded = load_all(config)
        tls = ServerTls(config.tls) if config.tls is not None else None
    except ConfigError as exc:
        log_event(logging.getLogger("steering"), "config-error", logging.ERROR, error=str(exc))
        return 2
    from steering.server import serve  # aiohttp only for the command that serves

    main_task = serve(config, loaded, config.source, tls)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay correct without it
        asyncio.run(main_task)
    else:
        uvloop.run(main_task)
    return 0


if __name__ == "__main__":
    sys.exit(main())
